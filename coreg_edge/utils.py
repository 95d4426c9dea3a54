"""Small helpers every stage uses: atomic outputs, device choice, progress bars."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from coreg_edge.errors import UserError

T = TypeVar("T")
LOGGER_NAME = "coreg_edge"  # the one logger of every progress line (coreg_edge/logs.py)


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
    import torch  # lazy: the core stays torch-free (the device install has no torch)

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


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, quiet: bool = False, **kw: Any):
    """A tqdm bar on stderr; silent with `quiet` (this bar only), while the `coreg_edge` logger is quiet
    (-q, a Python call's quiet=True: coreg_edge/logs.py), on torchrun followers, and when stderr is not a
    terminal (clean logs)."""

    from tqdm.auto import tqdm  # lazy: only where a bar is drawn

    shown = logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO) and torchrun_rank() in (None, 0)
    disable = quiet or not shown or not sys.stderr.isatty()
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
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON file's object, or {} when it is missing, unreadable or not an object (an earlier report, a
    lock's owner record: worth reading, never worth failing over)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """TOML text -> a dict, the parser's message on one line (recipes, classes tables): tomllib, or tomli on
    Python 3.10."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UserError(f"{source}: reading TOML on Python 3.10 needs tomli: pip install tomli") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML ({one_line(exc)})") from exc


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
