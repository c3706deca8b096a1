"""docs/reliability.md stays honest: one row per FAILURES.md scenario, every cited test exists.

The table maps each scenario (T1–T11 tokens, L1–L10 locks and processes, D1–D12 data and
progress, O1–O4 operations) to its mechanism, the tests that prove it (pytest node ids) and the
bound they assert. A row either cites tests or says "n/a — <reason>". No servers: the page is
parsed as text and the cited test files with `ast`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOC = PROJECT_ROOT / "docs" / "reliability.md"

# The scenario ids of ../shared/FAILURES.md (not part of the repository, hence written out).
SCENARIOS = (
    "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11",
    "L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L9", "L10",
    "D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8", "D9", "D10", "D11", "D12",
    "O1", "O2", "O3", "O4",
)
COLUMNS = ("id", "incident", "design", "proved by", "measured bound")
MAX_NOT_APPLICABLE = 4  # "few": about one scenario in ten
MIN_REASON_WORDS = 4

ROW_START = re.compile(r"^\|\s*([A-Z]\d+)\s*\|")
NODE_ID = re.compile(r"tests/[\w/.-]+?\.py(?:::\w+)+")
NOT_APPLICABLE = re.compile(r"^n/a\s*[—–:-]*\s*(?P<reason>.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Row:
    scenario: str
    line: int
    cells: tuple[str, ...]

    def cell(self, column: str) -> str:
        """The text of `column` ("" when the row has the wrong number of cells)."""
        return self.cells[COLUMNS.index(column)] if len(self.cells) == len(COLUMNS) else ""

    @property
    def proof(self) -> str:
        return self.cell("proved by")

    @property
    def node_ids(self) -> list[str]:
        return NODE_ID.findall(self.proof)

    @property
    def not_applicable_reason(self) -> str | None:
        """The reason of an "n/a — reason" proof cell, else None."""
        match = NOT_APPLICABLE.match(self.proof.strip())
        return match["reason"].strip() if match else None


def table_rows(path: Path) -> list[Row]:
    """Every scenario row of the page's tables: lines starting with `| <id> |`, split into cells."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if match := ROW_START.match(line):
            cells = tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
            rows.append(Row(match[1], number, cells))
    return rows


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """The node-id suffixes a test file defines: `test_x`, `TestClass::test_x` (nested too)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("test"):
                    names.add(prefix + node.name)
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                visit(node.body, f"{prefix}{node.name}::")

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body, "")
    return frozenset(names)


def unresolved(node_id: str, root: Path) -> str | None:
    """Why `node_id` names no test under `root`, or None when it does."""
    file_part, _, name = node_id.partition("::")
    path = root / file_part
    if not path.is_file():
        return f"{file_part} does not exist"
    if name not in defined_tests(path):
        return f"{file_part} defines no test {name}"
    return None


# --------------------------------------------------------------------------- the checks


def scenario_problems(rows: list[Row]) -> list[str]:
    counts = {scenario: 0 for scenario in SCENARIOS}
    problems = []
    for row in rows:
        if row.scenario not in counts:
            problems.append(f"line {row.line}: {row.scenario} is not a FAILURES.md scenario")
        else:
            counts[row.scenario] += 1
        if len(row.cells) != len(COLUMNS):
            problems.append(f"{row.scenario} (line {row.line}): {len(row.cells)} cells, "
                            f"expected {len(COLUMNS)}: {' | '.join(COLUMNS)}")
    problems += [f"{scenario}: no row" for scenario, n in counts.items() if n == 0]
    problems += [f"{scenario}: {n} rows, expected one" for scenario, n in counts.items() if n > 1]
    return problems


def proof_problems(rows: list[Row]) -> list[str]:
    problems = []
    for row in rows:
        reason = row.not_applicable_reason
        if reason is not None and row.node_ids:
            problems.append(f"{row.scenario}: says n/a but cites {row.node_ids}")
        elif reason is None and not row.node_ids:
            problems.append(f"{row.scenario}: cites no test node id and does not say "
                            f"'n/a — <reason>': {row.proof!r}")
        if len(row.cells) == len(COLUMNS):
            problems += [f"{row.scenario}: the {column!r} cell is empty"
                         for column in ("design", "measured bound") if not row.cell(column)]
    return problems


def resolution_problems(rows: list[Row], root: Path) -> list[str]:
    return [f"{row.scenario}: {node_id} does not resolve ({why})"
            for row in rows for node_id in row.node_ids
            if (why := unresolved(node_id, root)) is not None]


def not_applicable_problems(rows: list[Row]) -> list[str]:
    skipped = [row for row in rows if row.not_applicable_reason is not None]
    problems = [f"{row.scenario}: 'n/a' needs a reason of {MIN_REASON_WORDS}+ words, got "
                f"{row.not_applicable_reason!r}" for row in skipped
                if len(row.not_applicable_reason.split()) < MIN_REASON_WORDS]
    if len(skipped) > MAX_NOT_APPLICABLE:
        problems.append(f"{len(skipped)} n/a rows ({', '.join(r.scenario for r in skipped)}); "
                        f"at most {MAX_NOT_APPLICABLE}: a scenario that can happen needs a test")
    return problems


def report(path: Path, problems: list[str]) -> str:
    shown = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
    return f"{shown}:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- the tests


def test_every_scenario_has_exactly_one_row():
    problems = scenario_problems(table_rows(DOC))
    assert not problems, report(DOC, problems)


def test_every_row_cites_a_test_or_says_why_not():
    problems = proof_problems(table_rows(DOC))
    assert not problems, report(DOC, problems)


def test_every_cited_test_exists():
    problems = resolution_problems(table_rows(DOC), PROJECT_ROOT)
    assert not problems, report(DOC, problems)


def test_not_applicable_rows_are_few_and_give_a_reason():
    problems = not_applicable_problems(table_rows(DOC))
    assert not problems, report(DOC, problems)


def test_the_checks_catch_a_missing_row_a_duplicate_and_an_unknown_test(tmp_path):
    """The checks above on a damaged copy of the page: each damage is named."""
    lines = DOC.read_text(encoding="utf-8").splitlines()

    def row_index(scenario: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(f"| {scenario} |"))

    def with_proof(index: int, proof: str) -> str:
        cells = lines[index].strip().strip("|").split("|")
        cells[COLUMNS.index("proved by")] = f" {proof} "
        return "|" + "|".join(cells) + "|"

    def damaged_rows(changes: dict[int, str | None], extra: list[str]) -> list[Row]:
        """The page with line `i` replaced by changes[i] (None: removed), `extra` appended."""
        kept = [changes.get(i, line) for i, line in enumerate(lines)]
        path = tmp_path / "reliability.md"
        path.write_text("\n".join([*(line for line in kept if line is not None), *extra]),
                        encoding="utf-8")
        return table_rows(path)

    d5, o2 = row_index("D5"), row_index("O2")
    first_id = NODE_ID.search(lines[d5])[0]
    rows = damaged_rows({row_index("T3"): None,
                         d5: lines[d5].replace(first_id, first_id + "_renamed"),
                         o2: with_proof(o2, "n/a — gone")},
                        extra=[lines[row_index("D6")]])
    assert "T3: no row" in scenario_problems(rows)
    assert "D6: 2 rows, expected one" in scenario_problems(rows)
    assert any(p.startswith(f"D5: {first_id}_renamed does not resolve")
               for p in resolution_problems(rows, PROJECT_ROOT))
    assert any(p.startswith("O2: 'n/a' needs a reason") for p in not_applicable_problems(rows))

    rows = damaged_rows({o2: with_proof(o2, "nothing here")}, extra=[])
    assert [p for p in proof_problems(rows) if p.startswith("O2: cites no test")]
    assert scenario_problems(rows) == []
