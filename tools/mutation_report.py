"""Print the mutation score of each mutated file from mutmut's meta files (mutants/**/*.meta).

Usage: python tools/mutation_report.py [--list]   (after `make mutation`; --list names every
mutant that was checked and not killed). The score is killed / tested, where a timeout counts as
killed, as in mutmut's own badge; mutants no selected test reaches and mutants not run yet are
shown apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS_DIR = Path("mutants")
COLUMNS = ("killed", "timeout", "survived", "no tests", "not checked", "other")


def file_statuses(meta_path: Path) -> dict[str, str]:
    """Mutant name -> mutmut status ("killed", "survived", ...) for one mutated file."""
    exit_codes = json.loads(meta_path.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in exit_codes.items()}


def column(status: str) -> str:
    return status if status in COLUMNS else "other"


def score_text(counts: Counter) -> str:
    tested = counts["killed"] + counts["timeout"] + counts["survived"] + counts["other"]
    if not tested:
        return "-"
    return f"{100 * (counts['killed'] + counts['timeout']) / tested:.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true",
                        help="name every mutant checked and not killed")
    args = parser.parse_args(argv)
    metas = sorted(MUTANTS_DIR.rglob("*.py.meta"))
    if not metas:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 1
    print(f"{'file':32} {'total':>6} " + " ".join(f"{c:>11}" for c in COLUMNS) + "   score")
    for meta in metas:
        statuses = file_statuses(meta)
        counts = Counter(column(status) for status in statuses.values())
        name = str(meta.relative_to(MUTANTS_DIR)).removesuffix(".meta")
        print(f"{name:32} {len(statuses):>6} " + " ".join(f"{counts[c]:>11}" for c in COLUMNS)
              + f"   {score_text(counts)}")
        if args.list:
            for mutant, status in sorted(statuses.items()):
                if status not in ("killed", "timeout", "not checked"):
                    print(f"    {status:12} {mutant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
