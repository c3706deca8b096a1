"""What the Diagnostics scripts share: their argument parser, one-line errors, secret scrubbing.

Bad usage exits with argparse's code 2, which each script's epilog lists.
"""

from __future__ import annotations

import argparse
import sys


def parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A script's parser; `epilog` (exit codes, …) is printed as written."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(message: str, exit_code: int) -> int:
    """Print `error: message` on stderr (one line, no traceback); returns `exit_code`."""
    print(f"error: {message}", file=sys.stderr)
    return exit_code


def scrub(text: str, *secrets: str | None) -> str:
    """`text` with every non-empty secret replaced by ***."""
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text
