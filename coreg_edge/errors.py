"""Errors a user can fix. The CLI prints them as one line on stderr and exits non-zero."""

from __future__ import annotations

import importlib


class UserError(Exception):
    """Bad input or environment: the message alone tells the user what is wrong and what to do."""

    exit_code = 1


class FollowerExit(UserError):
    """A torchrun rank other than 0 stops with the run: rank 0 prints the one line, this rank prints nothing."""

    quiet = True

    def __init__(self, exit_code: int = 1) -> None:
        super().__init__("stopped with rank 0")
        self.exit_code = exit_code


class MissingExtraError(UserError):
    """A host-only feature was used on a device install (no torch & co.)."""

    def __init__(self, what: str, module: str, extra: str = "train"):
        kind = "training extras" if extra == "train" else f"{extra} extra"
        super().__init__(f"{what} needs the {kind} ({module} is not installed): pip install 'coreg-edge[{extra}]'")


def require(module: str, what: str):
    """Import `module` or raise a one-line MissingExtraError naming the install to fix it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised on device installs
        raise MissingExtraError(what, module) from exc
