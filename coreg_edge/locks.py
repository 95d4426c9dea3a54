"""Exclusive locks on outputs (a run folder, an export folder, an annotation file) between processes.

Two `train` calls into one `--out` both passed the "already holds a run" check before either wrote
config.json, and interleaved their metrics. The lock is the kernel's: `fcntl.flock` on a small file
beside the output (`.NAME.lock`, so the output's own contents stay as they were; inside a folder output,
`DIR/.coreg-edge.lock`, when its parent is not writable). The kernel releases it when the owner dies,
even by kill -9, so there is no stale lock to guess about across containers or pid reuse. The file holds
the owner's pid, host, command and start time, so that the second caller's one line names the holder.
Without fcntl (Windows) an O_EXCL lock file whose owner pid is gone is taken over instead.
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
from coreg_edge.utils import read_json_object

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

INSIDE_NAME = ".coreg-edge.lock"  # the lock inside a folder output whose parent is not writable


def is_lock_file(path: Path) -> bool:
    """A lock of ours, which a check for "is this folder empty" must not count."""
    return path.name == INSIDE_NAME or (path.name.startswith(".") and path.name.endswith(".lock"))


class LockedError(UserError):
    """Another live process holds the output."""


def lock_path(target: str | os.PathLike[str]) -> Path:
    """Where the lock of `target` lives: beside it, hidden; inside it when it is a folder whose parent
    this user cannot write (a mounted volume, a shared group folder)."""
    target = Path(target).expanduser().resolve()
    if target.is_dir() and not os.access(target.parent, os.W_OK) and os.access(target, os.W_OK):
        return target / INSIDE_NAME
    return target.parent / f".{target.name or 'root'}.lock"


def _not_writable(target: str | os.PathLike[str], exc: OSError) -> UserError:
    return UserError(f"{target}: not writable ({exc.strerror or exc})")


def check_writable(target: str | os.PathLike[str]) -> None:
    """Fail now, naming the user's path, when `target` (an existing folder, or a file to be) cannot be
    written: a real temporary file is created and removed."""
    target = Path(target)
    folder = target if target.is_dir() else target.parent
    try:
        handle, probe = tempfile.mkstemp(prefix=".coreg-edge-write-test-", dir=folder)
    except OSError as exc:
        raise _not_writable(target, exc) from None
    os.close(handle)
    os.unlink(probe)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _describe(record: dict[str, Any]) -> str:
    if not record:
        return "another coreg-edge process"
    since = record.get("since")
    when = time.strftime(" since %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    host = f" on {record['host']}" if record.get("host") not in (None, socket.gethostname()) else ""
    return f"{record.get('command', 'coreg-edge')} (pid {record.get('pid')}{host}{when})"


def _record() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["coreg-edge", *sys.argv[1:2]]) if sys.argv else "coreg-edge",
        "since": time.time(),
    }


def _acquire_flock(path: Path, target: Any, what: str) -> int:
    """An open descriptor holding the kernel lock on `path` (the file on disk is the one locked)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _not_writable(target, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_json_object(path)
            os.close(fd)
            raise LockedError(
                f"{target}: this {what} is in use by {_describe(holder)}; wait for it to finish or stop it"
            ) from None
        try:  # the file may have been removed (and made anew) by the owner releasing it: lock that one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _acquire_exclusive_file(path: Path, target: Any, what: str) -> int:  # pragma: no cover - Windows
    for _ in range(3):
        try:
            return os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            holder = read_json_object(path)
            if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
                if not process_alive(holder["pid"]):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
            raise LockedError(
                f"{target}: this {what} is in use by {_describe(holder)}; wait for it to finish or stop it "
                f"(a lock left by a crash: delete {path})"
            ) from None
        except OSError as exc:
            raise _not_writable(target, exc) from None
    raise LockedError(f"{target}: this {what} is being taken by other processes; try again")


@contextlib.contextmanager
def exclusive(target: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """Hold the lock of `target` for the block; raise LockedError naming the holder when it is taken."""
    try:
        Path(target).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _not_writable(target, exc) from None
    path = lock_path(target)
    acquire = _acquire_flock if fcntl is not None else _acquire_exclusive_file
    fd = acquire(path, target, what)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_record()).encode("utf-8"))
        check_writable(target)  # before any work: an unwritable output must not cost a whole training
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it: a waiting opener re-checks the inode and starts over
        os.close(fd)


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
