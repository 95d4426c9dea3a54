"""Small helpers every stage uses: atomic outputs, device choice, progress bars."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from coreg_edge.errors import UserError

T = TypeVar("T")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block completes.

    An interrupted or failed write never leaves a half-written file under the final name.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the permissions a plain open() would give
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; asking for cuda without one is a user error."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda (got {device!r})")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return device


def rank_device(device: str, environ: Mapping[str, str] | None = None) -> str:
    """Under torchrun each rank takes its own GPU (LOCAL_RANK): "cuda" -> "cuda:LOCAL_RANK"."""
    env = os.environ if environ is None else environ
    if device == "cuda" and "LOCAL_RANK" in env:
        return f"cuda:{int(env['LOCAL_RANK'])}"
    return device


def torchrun_world(environ: Mapping[str, str] | None = None) -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun); a malformed value is one line."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={env['WORLD_SIZE']!r} must be a whole number (torchrun sets it)") from None
    if world < 1:
        raise UserError(f"WORLD_SIZE must be at least 1 (got {world})")
    return world


def torchrun_rank(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's RANK under torchrun (None outside it: no WORLD_SIZE above 1, whatever RANK says)."""
    env = os.environ if environ is None else environ
    rank, world = env.get("RANK"), env.get("WORLD_SIZE", "1")
    if rank is None or not rank.isdigit() or not world.isdigit() or int(world) < 2:
        return None
    return int(rank)


def log(message: str, quiet: bool = False) -> None:
    """A progress line for the user on stderr (stdout stays scriptable), unless quiet."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, quiet: bool = False, **kw: Any):
    """A tqdm bar on stderr; silent with --quiet, and when stderr is not a terminal (clean logs)."""
    import sys

    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, leave=False, **kw)


def lazy_attributes(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `package.<table[name]>` only when `name` is first used: keeps a
    package's import light (the device install has no torch) while its public names stay one import away."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None: JSON has no NaN (Python's json writes a
    bare `NaN` that other readers reject)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """The one way this project writes a JSON file: atomically (a temporary name, then a rename), indented
    by 2 with a trailing newline, non-finite numbers as null."""
    import json

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON file's object, or {} when it is missing, unreadable or not an object (an earlier report, a
    lock's owner record: worth reading, never worth failing over)."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def one_line(exc: BaseException) -> str:
    """An exception as the first line of its text (its type's name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_function(function: str | Callable[..., Any]) -> Callable[..., Any]:
    """A registry row's function: a callable, or "module:function" imported on first use (so listing the
    rows imports nothing heavy)."""
    if callable(function):
        return function
    module, _, name = function.partition(":")
    return getattr(importlib.import_module(module), name)


def lazy_exports(
    namespace: MutableMapping[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's PEP 562 `__getattr__` and `__dir__` for names loaded on first use: `exports` maps a name to
    its module (".sub" relative to the package, or absolute); a loaded name is kept in `namespace`."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], namespace["__name__"]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


#: A file inside each staging folder of new_folder(): whose it is (pid, host, target), for a later cleanup.
STAGING_MARK = ".coreg-edge-staging"


def _staging_name(target: Path, pid: int) -> str:
    return f".{target.name or 'root'}.{pid}.tmp"


def remove_stale_staging(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders new_folder() left for `target` (an absolute path) in a process that died
    (kill -9, power loss): beside it, or inside it when it was an existing empty folder. One is removed only
    when its name, its mark (this host, that pid, this target) and a gone process all agree; returns them."""
    import re
    import socket

    from coreg_edge.locks import process_alive

    target = Path(target)
    pattern = re.compile(r"\." + re.escape(target.name or "root") + r"\.(\d+)\.tmp")
    removed = []
    for folder in (target.parent, target):
        if not folder.is_dir():
            continue
        try:
            entries = list(folder.glob(".*.tmp"))
        except OSError:  # unreadable: nothing of ours can be found there
            continue
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir():
                continue
            pid, mark = int(match.group(1)), read_json_object(entry / STAGING_MARK)
            same_host = mark.get("host") == socket.gethostname()
            ours = mark.get("pid") == pid and same_host and mark.get("out") == str(target)
            if ours and pid != os.getpid() and not process_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)  # links inside are removed, never followed
                removed.append(entry)
    return removed


def check_new_folder(out: str | os.PathLike[str]) -> Path:
    """A folder output must be new or empty: an earlier output is never replaced (one line otherwise).
    Stale staging folders of a dead earlier call for the same folder are removed first (they are not
    output, and would otherwise make it look used forever). Returns `out` as given (user-relative)."""
    from coreg_edge.locks import INSIDE_NAME

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(
            f"--out {out}: is a file; --out names a folder to write (new or empty), nothing was changed"
        )
    target = out.resolve()
    remove_stale_staging(target)
    # our own lock (inside when the parent is not writable) does not count
    if target.is_dir() and any(p.name != INSIDE_NAME for p in target.iterdir()):
        raise UserError(
            f"--out {out}: exists and is not empty; choose a new folder (nothing was overwritten)"
        )
    return out


def check_outside(
    out: str | os.PathLike[str], folder: str | os.PathLike[str] | None, what: str = "DATA"
) -> None:
    """Refuse a folder output inside `folder` (the images it is made from): reading that folder again would
    take the output's files for more items (an extra class, every item twice)."""
    if folder is None or not Path(folder).is_dir():
        return
    inner, outer = Path(out).expanduser().resolve(), Path(folder).resolve()
    if inner == outer or outer in inner.parents:
        raise UserError(
            f"--out {out}: is inside {what} {folder}, whose images it would then add to; choose a folder outside it"
        )


@contextlib.contextmanager
def new_folder(out: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success its contents become `out` (new or empty), on any failure
    it is removed and `out` stays as it was; an OSError becomes one line naming `what`.

    A new `out` is built beside it and renamed (atomic). An existing empty folder (`--out .` included) is
    kept and filled in place: staged inside it, then each entry renamed into it, so a shell inside it, a
    mount point and its permissions stay as they were. The path is resolved first: `.` has no name."""
    import json
    import socket

    given = check_new_folder(out)
    target = given.resolve()
    fill = target.is_dir()
    staging = (target if fill else target.parent) / _staging_name(target, os.getpid())
    moved: list[Path] = []
    done = False
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        mark = {"pid": os.getpid(), "host": socket.gethostname(), "out": str(target)}
        (staging / STAGING_MARK).write_text(json.dumps(mark), encoding="utf-8")
        yield staging
        if fill:  # folders first, files (the manifests) last; the mark stays until the staging folder goes
            for entry in sorted(staging.iterdir(), key=lambda p: (p.is_file(), p.name)):
                if entry.name != STAGING_MARK:
                    os.rename(entry, target / entry.name)
                    moved.append(target / entry.name)
        else:
            (staging / STAGING_MARK).unlink()
            staging.rename(target)
        done = True
    except OSError as exc:
        reason = str(exc).replace(str(staging), str(given))  # name the user's folder, not the hidden one
        raise UserError(f"--out {given}: cannot write the {what} ({reason})") from exc
    finally:
        if not done:
            for path in moved:  # a half-filled folder is no output: back to empty (only what we put there)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
