"""One option, written once: a settings field carries its default, help, choices and range.

timm keeps a model's config as plain data; here every stage's options are plain frozen dataclasses
(`AnnotateSettings`, `TrainSettings`, `ExportSettings`, `BenchSettings`), and each field's metadata is an
`OptionSpec`. Three things are made from it, so none is written twice:

- the command's click options (`coreg_edge.cli.common.settings_options`): flag, type, default, choices,
  help with the range;
- the recipe's keys for the stage's section (`coreg_edge.recipe.schema`), and where a key the recipe sets
  elsewhere goes (`recipe="data.eval"`);
- the checks: choices and ranges, run by the dataclass itself (`check_fields` in `__post_init__`), so the
  CLI, a recipe and a notebook get the same one-line error. A recipe names the key instead of the flag.

Adding an option is one field: `name: int = option(5, help="...", low=1)`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from coreg_edge.choices import DEVICES
from coreg_edge.errors import UserError


class SettingError(UserError):
    """A value out of its choices or range: `field` names the setting, `problem` says what is wrong.
    On the command line it is a usage error (exit 2, as click's own checks)."""

    exit_code = 2

    def __init__(self, field: str, problem: str, flag: str | None = None):
        self.field = field
        self.problem = problem
        super().__init__(f"{flag or cli_flag(field)} {problem}")


@dataclass(frozen=True)
class Range:
    """Allowed numbers: `low` / `high` (None: unbounded), each included unless `*_open`; always finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def short(self) -> str:
        """'x>=1', '0<=x<0.5': click's own notation, for --help."""
        left = "" if self.low is None else f"{self.low:g}{'<' if self.low_open else '<='}"
        right = "" if self.high is None else f"{'<' if self.high_open else '<='}{self.high:g}"
        if not left:
            return f"x{right}"
        return f"{left}x{right}" if right else f"x{'>' if self.low_open else '>='}{self.low:g}"

    def describe(self) -> str:
        """'>= 1', '> 0', 'within [0, 0.5)': the words of the error message."""
        if self.high is None and self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None and self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        if self.low is None:
            return "a finite number"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"within {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class OptionSpec:
    """What a settings field is, beyond its type and default."""

    help: str = ""
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None  # a callable: a live registry
    range: Range | None = None  # numbers; for a list, every item (and the list must not be empty)
    flag: str | None = None  # the CLI option when it is not --field-name (e.g. --eval for eval_data)
    cli: bool = True  # False: no CLI option (set by the recipe or by another option, e.g. --set)
    recipe: bool | str = True  # True: a key of the stage's recipe section; a str: where a recipe sets it
    recipe_type: str | None = None  # the recipe Key type when the hint does not say it ("templates")
    execution: bool = False  # where or how it runs, not what it computes: not part of run's fingerprints
    on_resume: bool = False  # train --resume takes it from the new call (execution options always)
    metavar: str | None = None
    # part of `coreg-edge run`'s fingerprint only when set (not None): an option added later leaves the run
    # folders made before it as they were
    fingerprint_if_set: bool = False
    common: bool = False  # one of --device / --seed: the CLI adds it once for every command

    def allowed(self) -> tuple[Any, ...] | None:
        return self.choices() if callable(self.choices) else self.choices


def option(
    default: Any = None,
    *,
    help: str = "",  # noqa: A002 - click's own name for it
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    default_factory: Callable[[], Any] | None = None,
    **spec: Any,
) -> Any:
    """A dataclass field with its OptionSpec (`spec`: flag, cli, recipe, execution, on_resume, ...)."""
    bounded = low is not None or high is not None
    metadata = {
        "option": OptionSpec(
            help=help,
            choices=choices,
            range=Range(low, high, low_open, high_open) if bounded else None,
            **spec,
        )
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


SEED_HELP = "Random seed (reproducible on CPU)."
DEVICE_HELP = "Where to compute; auto = cuda when available."


def seed_field() -> Any:
    return option(0, help=SEED_HELP, common=True, recipe="the top-level seed")


def device_field(**spec: Any) -> Any:
    spec = {"recipe": "the top-level device", **spec}
    return option("auto", help=DEVICE_HELP, choices=DEVICES, common=True, **spec)


def spec_of(field: dataclasses.Field) -> OptionSpec:
    return field.metadata.get("option") or OptionSpec(cli=False)


def option_fields(cls: type) -> Iterator[tuple[dataclasses.Field, OptionSpec]]:
    for field in dataclasses.fields(cls):
        yield field, spec_of(field)


def cli_flag(name: str, spec: OptionSpec | None = None) -> str:
    return (spec.flag if spec is not None and spec.flag else None) or "--" + name.replace("_", "-")


def unset_keys(settings: Any) -> frozenset[str]:
    """Fields marked fingerprint_if_set that are None here: left out of the fingerprint."""
    return frozenset(
        f.name for f, spec in option_fields(type(settings)) if spec.fingerprint_if_set and getattr(settings, f.name) is None
    )


def execution_keys(cls: type) -> frozenset[str]:
    """Fields that say where or how a stage runs: left out of `coreg-edge run`'s fingerprints."""
    return frozenset(f.name for f, spec in option_fields(cls) if spec.execution)


def resume_keys(cls: type) -> frozenset[str]:
    """Fields `train --resume` takes from the new call: the execution ones and those marked on_resume."""
    return frozenset(f.name for f, spec in option_fields(cls) if spec.execution or spec.on_resume)


def _describe_choices(choices: tuple[Any, ...]) -> str:
    return ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)


_KINDS = {int: "int", float: "float", str: "str", bool: "bool"}
_HINTS: dict[type, dict[str, tuple[str, ...]]] = {}


def _kinds(hint: Any) -> tuple[str, ...]:
    """A type hint -> the kinds of value it allows: int | None -> ("int",), tuple[int, ...] -> ("list[int]",)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(kind for arg in typing.get_args(hint) if arg is not type(None) for kind in _kinds(arg))
    origin = typing.get_origin(hint)
    if origin is dict:
        return ("dict",)
    if origin in (list, tuple):
        item = next((a for a in typing.get_args(hint) if a is not Ellipsis), str)
        return (f"list[{_KINDS.get(item, 'str')}]",)
    return (_KINDS[hint],) if hint in _KINDS else ()


def field_kinds(cls: type) -> dict[str, tuple[str, ...]]:
    """Each field's allowed kinds of value, from its type hint (() for a nested config)."""
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: _kinds(hints[f.name]) for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    item = kind[len("list[") : -1]
    return isinstance(value, (list, tuple)) and all(_is_kind(v, item) for v in value)


_WORDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false",
          "list[int]": "whole numbers", "list[str]": "strings", "list[float]": "numbers",
          "dict": "a table"}  # fmt: skip


def check_value(name: str, value: Any, spec: OptionSpec, kinds: tuple[str, ...] = ()) -> None:
    """Raise SettingError when `value` is not of the field's kind, one of its choices, or within its range."""
    if value is None:
        return
    what = " or ".join(_WORDS.get(kind, kind) for kind in kinds)
    if kinds and not any(_is_kind(value, kind) for kind in kinds):
        raise SettingError(name, f"must be {what} (got {value!r})", spec.flag)
    allowed = spec.allowed()
    if allowed is not None:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        wrong = next((item for item in items if item not in allowed), None)
        if not items:
            raise SettingError(name, f"needs at least one of {_describe_choices(allowed)}", spec.flag)
        if wrong is not None:
            each = "each " if isinstance(value, (list, tuple)) else ""
            raise SettingError(name, f"must be {each}one of {_describe_choices(allowed)} (got {wrong!r})", spec.flag)
    if spec.range is None:
        return
    limits = f"{what} {spec.range.describe()}".strip()
    shown = list(value) if isinstance(value, tuple) else value
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not items:
        raise SettingError(name, f"must be {limits}, at least one (got {shown!r})", spec.flag)
    if not all(_within(spec.range, item) for item in items):
        raise SettingError(name, f"must be {limits} (got {shown!r})", spec.flag)


def _within(bounds: Range, item: float) -> bool:
    try:
        return bounds.contains(float(item))
    except OverflowError:  # an integer too large for a float is outside any range
        return False


def check_fields(settings: Any) -> None:
    """Every field's kind, choices and range; the dataclass's own __post_init__ adds checks across fields."""
    kinds = field_kinds(type(settings))
    for field, spec in option_fields(type(settings)):
        check_value(field.name, getattr(settings, field.name), spec, kinds[field.name])


def build(cls: type, settings: Any = None, options: dict[str, Any] | None = None) -> Any:
    """A settings object from an object and/or keywords (keywords win): the library functions' one entry,
    so a notebook can pass `AnnotateSettings(...)`, keywords, or both."""
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown {cls.__name__} setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    if settings is None:
        return cls(**options)
    if not isinstance(settings, cls):
        raise TypeError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
    return dataclasses.replace(settings, **options) if options else settings
