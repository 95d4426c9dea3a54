"""Exclusive locks on outputs (a run folder, an export folder, an annotation file) between processes.

Two `train` calls into one `--out` both passed the "already holds a run" check before either wrote
config.json, and interleaved their metrics. A lock is a file beside the output (`.NAME.lock`, so the
output's own contents stay as they were), created atomically with O_CREAT | O_EXCL and holding the owner's
pid, host, command and start time. A lock whose owner is gone (same host, pid not running) is stale and
is taken over; a live owner's lock is one line for the second caller naming the holder.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError


class LockedError(UserError):
    """Another live process holds the output."""


def lock_path(target: str | os.PathLike[str]) -> Path:
    """Where the lock of `target` lives: beside it, hidden."""
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


def check_writable(target: str | os.PathLike[str]) -> None:
    """Fail now, naming the user's path, when `target` (an existing folder, or a file to be) cannot be
    written: a real temporary file is created and removed."""
    target = Path(target)
    folder = target if target.is_dir() else target.parent
    try:
        handle, probe = tempfile.mkstemp(prefix=".coreg-edge-write-test-", dir=folder)
    except OSError as exc:
        raise UserError(f"{target}: not writable ({exc.strerror or exc})") from None
    os.close(handle)
    os.unlink(probe)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def _holder(path: Path) -> dict[str, Any] | None:
    """The lock's owner record; None when the lock is stale (owner gone) or unreadable and old."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # being written right now, or torn by a crash
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        return None if age > 10 else {"pid": "?", "command": "another coreg-edge process"}
    if not isinstance(record, dict):
        return None
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        if not process_alive(record["pid"]) or record["pid"] == os.getpid():
            return None
    return record


def _describe(record: dict[str, Any]) -> str:
    since = record.get("since")
    when = time.strftime(" since %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    host = f" on {record['host']}" if record.get("host") not in (None, socket.gethostname()) else ""
    return f"{record.get('command', 'coreg-edge')} (pid {record.get('pid')}{host}{when})"


@contextlib.contextmanager
def exclusive(target: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """Hold the lock of `target` for the block; raise LockedError naming the holder when it is taken."""
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{target}: not writable ({exc.strerror or exc})") from None
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["coreg-edge", *sys.argv[1:3]]) if sys.argv else "coreg-edge",
        "since": time.time(),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None:
                raise LockedError(
                    f"{target}: this {what} is in use by {_describe(holder)}; wait for it to finish or stop it "
                    f"(a lock left by a crash on another machine: delete {path})"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its owner is gone
            continue
        except PermissionError:
            raise UserError(f"{target}: not writable ({path.parent} does not let this user write)") from None
        except OSError as exc:  # a read-only filesystem, a parent that is a file, ...
            raise UserError(f"{target}: not writable ({exc.strerror or exc})") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        break
    else:  # pragma: no cover - three stale takeovers lost to other processes in a row
        raise LockedError(f"{target}: this {what} is being taken by other processes; try again")
    try:
        check_writable(target)  # before any work: an unwritable output must not cost a whole training
        yield path
    finally:
        with contextlib.suppress(OSError):
            current = json.loads(path.read_text(encoding="utf-8"))
            if current.get("pid") == os.getpid() and current.get("since") == record["since"]:
                path.unlink()


def locks_output(
    param: str = "out", what: str = "output"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a library function so that its `param` output is locked while it runs (no-op when None)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = signature.bind_partial(*args, **kwargs).arguments.get(param)
            if target is None:
                return func(*args, **kwargs)
            with exclusive(target, what):
                return func(*args, **kwargs)

        return wrapper

    return decorate
