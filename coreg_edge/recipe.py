"""Recipes: one TOML file holds everything `coreg-edge run` needs (data, classes, annotator, training, export).

Why a file: a paper reproduction or a deployment target is a few dozen settings across four stages; a
file keeps them reviewable, diffable, and the same on every machine. The stage tables are made from the
stages' settings dataclasses (coreg_edge/settings: one key per field, same names all the way), so a typo
is a one-line error naming the key and what is allowed, never a silently ignored setting.

    name = "digits"                     # optional; default: the file stem
    description = "..."                 # optional
    seed = 0                            # annotation, splits, training, calibration
    device = "auto"                     # auto | cpu | cuda

    [data]     train (required), eval, val, download, data_dir
    [classes]  names, wording ("number {}": how a class is said in prompts)
    [annotate] AnnotateSettings fields (annotator, clip_model, mode, templates, partial_rate, preset, ...)
    [train]    TrainSettings fields (method, backbone, image_size, channels, epochs, warmup, batch_size, ...)
    [train.coreg]  any CoRegConfig field (lr, queue_size, warmup_view, loss_start, ramp_epochs, ...)
    [export]   ExportSettings fields (int8, target, recover, peer, opset, ...)
    [bench]    BenchSettings fields (batch_sizes, iters, warmup, threads)

Overrides (`--set KEY=VALUE`) use dotted keys (`train.epochs=5`, `train.coreg.lr=0.05`, `seed=1`) and are
type-checked like the file. Built-in recipes ship as package data (`coreg_edge.recipes`) and are found by
name: `load_recipe("cifar10")`.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:  # pragma: no cover
        tomllib = None  # type: ignore[assignment]

from coreg_edge.algorithm.config import CoRegConfig
from coreg_edge.annotate.templates import TEMPLATE_RULE, is_template
from coreg_edge.choices import DEVICES
from coreg_edge.classes import read_classes
from coreg_edge.errors import UserError
from coreg_edge.settings.fields import SettingError, field_kinds, option_fields
from coreg_edge.utils import parse_toml

RECIPE_PACKAGE = "coreg_edge.recipes"


class RecipeError(UserError):
    """A recipe (or a --set override) that does not validate; the message names the key."""


@dataclass(frozen=True)
class Key:
    """One allowed recipe key: its type, allowed values, and whether it may be absent or null."""

    type: str  # "str" | "int" | "float" | "bool" | "list[str]" | "list[int]" | "templates"
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None  # a callable: a live registry
    optional: bool = True  # may be left out (the library default applies); "none" in --set resets it
    required: bool = False

    def allowed(self) -> tuple[Any, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def describe(self) -> str:
        if self.allowed():
            return "one of " + ", ".join(
                str(c).lower() if isinstance(c, bool) else str(c) for c in self.allowed()
            )
        return {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "list[str]": "a list of strings",
            "list[int]": "a list of integers",
            "templates": "default, imagenet, a template file, or a list of templates with {}",
        }[self.type]


TOP_KEYS: dict[str, Key] = {
    "name": Key("str"),
    "description": Key("str"),
    "seed": Key("int"),
    "device": Key("str", DEVICES),
}

STATIC_SECTIONS: dict[str, dict[str, Key]] = {
    "data": {
        "train": Key("str", optional=False, required=True),
        "eval": Key("str"),
        "val": Key("str"),
        "download": Key("bool"),
        "data_dir": Key("str"),
    },
    "classes": {
        "names": Key("list[str]"),
        "wording": Key("str"),
    },
}

SECTION_ORDER = ("data", "classes", "annotate", "train", "train.coreg", "export", "bench")


#: The stage sections, each made from its settings dataclass (coreg_edge/settings): one key per field.
STAGE_SECTIONS = {
    "annotate": "coreg_edge.settings.annotate:AnnotateSettings",
    "train": "coreg_edge.settings.train:TrainSettings",
    "train.coreg": "coreg_edge.algorithm.config:CoRegConfig",
    "export": "coreg_edge.settings.export:ExportSettings",
    "bench": "coreg_edge.settings.bench:BenchSettings",
}


def _settings_class(section: str) -> type:
    module, _, name = STAGE_SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def _dataclass_keys(cls: type) -> dict[str, Key]:
    """A settings dataclass's recipe keys: its fields that live in this section (spec.recipe is True)."""
    kinds = field_kinds(cls)
    keys = {}
    for field, spec in option_fields(cls):
        if spec.recipe is True:  # a plain field (CoRegConfig's) is a key too
            kind = spec.recipe_type or (kinds[field.name] or ("str",))[0]
            keys[field.name] = Key(kind, spec.choices)
    return keys


def elsewhere(section: str) -> dict[str, str]:
    """Fields of a stage's settings that a recipe sets in another place: name -> where (a hint)."""
    if section not in STAGE_SECTIONS:
        return {}
    return {f.name: spec.recipe for f, spec in option_fields(_settings_class(section)) if isinstance(spec.recipe, str)}


_SCHEMA: dict[str, dict[str, Key]] | None = None


def schema() -> dict[str, dict[str, Key]]:
    """Every section's allowed keys; the stage sections follow their settings dataclasses."""
    global _SCHEMA
    if _SCHEMA is None:
        stages = {section: _dataclass_keys(_settings_class(section)) for section in STAGE_SECTIONS}
        _SCHEMA = {"": TOP_KEYS, **STATIC_SECTIONS, **stages}
    return _SCHEMA


def _label(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


# ---------------------------------------------------------------------------------------------------------
# Value checks (shared by TOML values and --set values)


def _check_value(value: Any, spec: Key, where: str) -> Any:
    """Return the value in its canonical type, or raise a one-line RecipeError naming `where`."""

    def bad(problem: str) -> RecipeError:
        return RecipeError(f"{where}: {problem}; expected {spec.describe()}")

    kind = spec.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad(f"{value!r} is not true/false")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"{value!r} is not an integer")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"{value!r} is not a number")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise bad(f"{value!r} is not a string")
    elif kind in ("list[str]", "list[int]"):
        item = str if kind == "list[str]" else int
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, item) for v in value):
            raise bad(f"{value!r} is not {spec.describe()}")
    elif kind == "templates":
        if isinstance(value, list):
            if not value or any(not isinstance(v, str) or not is_template(v) for v in value):
                raise RecipeError(f"{where}: every template must be a string with {TEMPLATE_RULE} (got {value!r})")
        elif not isinstance(value, str):
            raise bad(f"{value!r} is neither a string nor a list")
    allowed = spec.allowed()
    items = value if isinstance(value, list) and kind.startswith("list[") else [value]
    wrong = next((item for item in items if allowed is not None and item not in allowed), None)
    if wrong is not None:
        each = "each " if isinstance(value, list) else ""
        raise RecipeError(f"{where}: {wrong!r} is not allowed; expected {each}{spec.describe()}")
    return value


def _parse_text(raw: str, spec: Key, where: str) -> Any:
    """A --set value (text) -> a typed value, then the same checks as a TOML value."""
    text = raw.strip()
    if text.lower() in ("none", "null"):
        if not spec.optional:
            raise RecipeError(f"{where}: cannot be unset; expected {spec.describe()}")
        return _UNSET
    if tomllib is not None and text and text[0] in "[\"'":
        try:
            return _check_value(tomllib.loads(f"v = {text}")["v"], spec, where)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"{where}: {text!r} is not a valid TOML value ({exc})") from exc
    kind = spec.type
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                value: Any = True
            elif lowered in ("false", "0", "no", "off"):
                value = False
            else:
                raise ValueError(text)
        elif kind == "int":
            value = int(text)
        elif kind == "float":
            value = float(text)
        elif kind == "list[int]":
            value = [int(part) for part in text.split(",") if part.strip()]
        elif kind == "list[str]":
            value = [part.strip() for part in text.split(",") if part.strip()]
        else:  # str, templates (a set name or a file)
            value = raw
    except ValueError as exc:
        raise RecipeError(f"{where}: {raw!r} is not {spec.describe()}") from exc
    return _check_value(value, spec, where)


class _Unset:
    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<unset>"


_UNSET = _Unset()


# ---------------------------------------------------------------------------------------------------------
# Overrides


def parse_setting(section: str, text: str) -> tuple[str, Any]:
    """One `--set KEY=VALUE` for a section's keys, typed and checked as a recipe value is (the one --set
    parser: `train --set lr=0.02` is `run --set train.coreg.lr=0.02`). Returns (key, value); an unset
    value ("none") comes back as None."""
    dotted, raw = parse_override(text)
    keys = schema()[section]
    if dotted not in keys:
        raise RecipeError(f"--set {text}: unknown setting (known: {', '.join(sorted(keys))})")
    value = _parse_text(raw, keys[dotted], f"--set {dotted}")
    return dotted, None if value is _UNSET else value


def parse_override(text: str) -> tuple[str, str]:
    """'train.coreg.lr=0.05' -> ('train.coreg.lr', '0.05'); the key is checked when applied."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=5 or train.coreg.lr=0.05")
    return key, value


def _split_key(dotted: str) -> tuple[str, str]:
    """'train.coreg.lr' -> ('train.coreg', 'lr'); 'seed' -> ('', 'seed')."""
    section, _, key = dotted.rpartition(".")
    return section, key


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str | tuple[str, str]]) -> dict[str, Any]:
    """Return a copy of the (validated) recipe tree with each KEY=VALUE applied, type-checked."""
    tree = copy.deepcopy(tree)
    sections = schema()
    for item in overrides:
        dotted, raw = parse_override(item) if isinstance(item, str) else item
        section, key = _split_key(dotted)
        if section not in sections:
            allowed = ", ".join(s for s in SECTION_ORDER)
            raise RecipeError(
                f"--set {dotted}: unknown section {section!r}; sections: {allowed} (or a top-level key)"
            )
        spec = _lookup(section, key, where=f"--set {dotted}")
        value = _parse_text(raw, spec, f"--set {dotted}")
        table = _table(tree, section)
        if value is _UNSET:
            table.pop(key, None)
        else:
            table[key] = value
    return tree


def _table(tree: dict[str, Any], section: str) -> dict[str, Any]:
    node = tree
    for part in section.split(".") if section else ():
        node = node.setdefault(part, {})
    return node


def _lookup(section: str, key: str, where: str) -> Key:
    keys = schema()[section]
    if key in keys:
        return keys[key]
    hint = elsewhere(section).get(key)
    if hint is not None:
        raise RecipeError(f"{where}: set it as {hint}, not in [{section}]")
    place = f"[{section}]" if section else "the top level"
    raise RecipeError(f"{where}: unknown key; allowed in {place}: {', '.join(sorted(keys))}")


# ---------------------------------------------------------------------------------------------------------
# Validation


def validate_tree(tree: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check every key and type against the schema; return a normalised copy (floats as floats)."""
    out: dict[str, Any] = {}
    tables = [s for s in SECTION_ORDER if "." not in s]
    for key, value in tree.items():
        if key in tables:
            if not isinstance(value, dict):
                raise RecipeError(f"{source}: {key} must be a table ([{key}] with keys under it)")
            out[key] = _validate_section(key, value, source)
            continue
        if key in TOP_KEYS:
            out[key] = _check_value(value, TOP_KEYS[key], f"{source}: {key}")
            continue
        raise RecipeError(
            f"{source}: unknown key {key!r}; allowed: tables {', '.join(f'[{t}]' for t in tables)} "
            f"and top-level keys {', '.join(TOP_KEYS)}"
        )
    if "train" not in out.get("data", {}):
        raise RecipeError(f"{source}: data.train is required (a folder or a built-in name such as digits)")
    _check_ranges(out, source)
    return out


def _validate_section(section: str, table: Mapping[str, Any], source: str) -> dict[str, Any]:
    sections = schema()
    out: dict[str, Any] = {}
    for key, value in table.items():
        if section == "train" and key == "coreg" and isinstance(value, dict):
            out["coreg"] = _validate_section("train.coreg", value, source)
            continue
        spec = _lookup(section, key, where=f"{source}: {section}.{key}")
        out[key] = _check_value(value, spec, f"{source}: {section}.{key}")
    missing = [k for k, spec in sections[section].items() if spec.required and k not in out]
    if missing:
        raise RecipeError(f"{source}: {section}.{missing[0]} is required")
    return out


def _check_ranges(tree: Mapping[str, Any], source: str) -> None:
    """What the type check cannot see (ranges, checks across fields), checked by the settings dataclasses
    that own them: the recipe names the key where the CLI names the flag."""
    def fail(key: str, problem: str) -> None:
        raise RecipeError(f"{source}: {key}: {problem}")

    classes = tree.get("classes", {})
    names = classes.get("names")
    if names is not None:  # annotate's own rules for --classes, named by the key
        try:
            read_classes(names, option=f"{source}: classes.names:", minimum=2)
        except UserError as exc:
            raise RecipeError(str(exc)) from None
    if "wording" in classes:
        if not isinstance(classes["wording"], str) or not is_template(classes["wording"]):
            fail("classes.wording", f"{classes['wording']!r} needs {TEMPLATE_RULE}")
    train = dict(tree.get("train", {}))
    coreg = train.pop("coreg", {})
    try:
        CoRegConfig(**coreg)
    except ValueError as exc:  # "lr must be > 0, got 0.0" -> "train.coreg.lr: must be > 0, got 0.0"
        field, _, rest = str(exc).partition(" ")
        if field in CoRegConfig.__dataclass_fields__:
            fail(f"train.coreg.{field}", rest)
        fail("train.coreg", str(exc))
    tables = {"annotate": tree.get("annotate", {}), "train": {**train, "coreg": dict(coreg)},
              "export": tree.get("export", {}), "bench": tree.get("bench", {})}  # fmt: skip
    for section, table in tables.items():
        values = dict(table)
        if section == "annotate" and isinstance(values.get("templates"), list):
            values.pop("templates")  # an inline list: checked by the type check, written to a file by run
        try:
            _settings_class(section)(**values)
        except SettingError as exc:
            fail(f"{section}.{exc.field}", exc.problem)
        except UserError as exc:
            raise RecipeError(f"{source}: [{section}] {exc}") from exc


# ---------------------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (overrides applied). `tree` is the TOML structure; accessors give stage kwargs."""

    name: str
    source: str  # the file it came from ("builtin:NAME" for package recipes)
    tree: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.tree.get("seed", 0))

    @property
    def device(self) -> str:
        return str(self.tree.get("device", "auto"))

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one table ("train.coreg" works too); {} when the recipe leaves it out."""
        node: Any = self.tree
        for part in name.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return copy.deepcopy(node)

    @property
    def data(self) -> dict[str, Any]:
        return self.section("data")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, **copy.deepcopy(self.tree)}


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with the package (found after a regular install too)."""
    try:
        folder = resources.files(RECIPE_PACKAGE)
    except ModuleNotFoundError:  # pragma: no cover - broken install
        return []
    return sorted(entry.name[: -len(".toml")] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def _read_recipe_text(recipe: str | os.PathLike[str]) -> tuple[str, str, str]:
    """(text, source label, default name) for a path or a built-in name."""
    path = Path(recipe).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8"), str(path), path.stem
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{path}: cannot read recipe ({exc})") from exc
    name = str(recipe)
    stem = name[: -len(".toml")] if name.endswith(".toml") else name
    if "/" not in stem and os.sep not in stem and stem in builtin_recipes():
        text = resources.files(RECIPE_PACKAGE).joinpath(f"{stem}.toml").read_text(encoding="utf-8")
        return text, f"builtin:{stem}", stem
    raise RecipeError(
        f"recipe {name!r}: no such file, and not a built-in recipe ({', '.join(builtin_recipes()) or 'none installed'})"
    )


def parse_recipe_text(text: str, source: str) -> dict[str, Any]:
    """TOML text -> a raw tree, with the parser's message on one line."""
    try:
        return parse_toml(text, source)
    except UserError as exc:
        raise RecipeError(str(exc)) from exc


def load_recipe(
    recipe: str | os.PathLike[str] | Recipe, overrides: Sequence[str | tuple[str, str]] = ()
) -> Recipe:
    """Load a recipe file or a built-in name, apply `--set` overrides, validate everything, return it."""
    if isinstance(recipe, Recipe):
        tree = apply_overrides(recipe.tree, overrides)
        return Recipe(tree.get("name", recipe.name), recipe.source, validate_tree(tree, recipe.source))
    text, source, stem = _read_recipe_text(recipe)
    tree = validate_tree(parse_recipe_text(text, source), source)
    tree = validate_tree(apply_overrides(tree, overrides), f"{source} with --set") if overrides else tree
    return Recipe(str(tree.get("name", stem)), source, tree)
