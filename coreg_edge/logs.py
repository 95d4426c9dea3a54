"""One logger for the progress lines of every stage: the `coreg_edge` logger, on stderr (stdout stays
scriptable: JSON, tables).

Library code says `logs.info("...")`. The logger has one handler of its own (as ultralytics' LOGGER does),
so the Python API prints its progress lines as the CLI does, with no set-up; it writes to whatever
`sys.stderr` is at the time (pytest's and click's captures swap it). Quiet is a level, not a parameter:
the CLI's `-q` sets WARNING for the process (`set_quiet`), a Python call's `quiet=True` for that call
(`quieted`). Under torchrun only rank 0 says anything below a warning, so N processes print one story.
Warnings stay `warnings.warn` (the CLI shows them as `Warning: ...` lines).

To route the lines elsewhere: `logging.getLogger("coreg_edge").handlers[:] = [your_handler]`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from coreg_edge.utils import LOGGER_NAME, torchrun_rank

LOGGER = logging.getLogger(LOGGER_NAME)


def _follower() -> bool:
    """A torchrun process other than rank 0."""
    return torchrun_rank() not in (None, 0)


class _StderrHandler(logging.Handler):
    """The message alone, on the current sys.stderr, flushed; followers' lines below WARNING dropped."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and _follower():
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging never raises into the caller
            self.handleError(record)


def _install() -> None:
    if not any(isinstance(handler, _StderrHandler) for handler in LOGGER.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # one line per message, whatever the root logger does


_install()


def info(message: str) -> None:
    """A progress line for the user (stderr), unless quiet."""
    LOGGER.info(message)


def set_quiet(quiet: bool) -> None:
    """The CLI's -q: warnings and errors only, for the rest of the process."""
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)


@contextlib.contextmanager
def quieted(quiet: bool = True) -> Iterator[None]:
    """A Python call's `quiet=True`: warnings and errors only while it runs (the level is restored after)."""
    if not quiet:
        yield
        return
    before = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(before)
