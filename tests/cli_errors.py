"""Checks shared by the bad-input tests of every command: an error is one line, never a traceback, and leaves
nothing behind. A plain module (tests/ is on sys.path through the root conftest), not a conftest: a
`from conftest import` could pick up another folder's conftest."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def assert_one_line_error(result: Any, *fragments: str) -> None:
    """A non-zero exit with exactly one `Error: ...` line on stderr holding every fragment."""
    assert result.exit_code != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err[0], err[0]


def one_line_error(result: Any, code: int, fragment: str) -> None:
    """Exit `code` with one `Error:` line holding `fragment`, never an unexpected error."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0], lines
    assert "unexpected" not in lines[0]


def last_line(result: Any) -> str:
    """The last stderr line (warnings may come before the error)."""
    return result.stderr.strip().splitlines()[-1]


def no_leftovers(folder: Path) -> bool:
    """No annotation file and no temporary file left in `folder`."""
    return [p.name for p in folder.iterdir() if p.suffix in (".npz", ".tmp")] == []
