"""Class names: from the flag (a,b,c, a text file, or a TOML/JSON file giving each class several names),
the folder's sub-folders, or the built-in dataset."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.annotate.templates import TEMPLATE_RULE, is_template
from coreg_edge.data import ImageSource, dataset_info
from coreg_edge.errors import UserError
from coreg_edge.utils import parse_toml


def _names_table(table: Any, where: str) -> dict[str, list[str]]:
    """{class: name or [names]} -> {class: [names]}, each name a non-empty string."""
    if not isinstance(table, Mapping) or not table:
        raise UserError(f"--classes {where}: expected a table of class = name or [names, ...]")
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for cls, names in table.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise UserError(f"--classes {where}: {cls!r} must be a name or a non-empty list of names")
        key = str(cls).strip()
        if key in out:
            raise UserError(f"--classes {where}: class {key!r} is given twice")
        out[key] = list(dict.fromkeys(n.strip() for n in names))
        for name in out[key]:  # a prompt name of two classes would vote for both
            if owner.setdefault(name, key) != key:
                raise UserError(f"--classes {where}: the name {name!r} is given to both {owner[name]!r} and {key!r}")
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    except UnicodeDecodeError as exc:
        raise UserError(f"--classes {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"--classes {path}: cannot read it ({exc.strerror})") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"class {dup!r} is given twice")
    return dict(pairs)


def _read_table(path: Path) -> dict[str, list[str]]:
    text = _read_text(path)
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            raise UserError(f"--classes {path}: not valid JSON ({exc})") from exc
    else:
        try:
            table = parse_toml(text, str(path))
        except UserError as exc:
            raise UserError(f"--classes {exc}") from exc
    return _names_table(table, str(path))


def parse_classes(
    classes: str | list[str] | Mapping[str, Any] | None,
) -> tuple[list[str] | None, dict[str, list[str]] | None]:
    """(class names, each class's prompt names or None): from a list, a mapping {class: name or [names]},
    a .toml/.json file holding that mapping, a text file (one name per line) or a comma-separated string."""
    if classes is None:
        return None, None
    synonyms = None
    if isinstance(classes, Mapping):
        synonyms = _names_table(classes, "table")
        names = list(synonyms)
    elif isinstance(classes, (list, tuple)):
        names = [str(c).strip() for c in classes]
    elif Path(classes).is_file() and Path(classes).suffix.lower() in (".toml", ".json"):
        synonyms = _read_table(Path(classes))
        names = list(synonyms)
    elif Path(classes).is_file():
        lines = _read_text(Path(classes)).splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    elif "," in classes:
        names = [c.strip() for c in classes.split(",")]
    elif Path(classes).suffix.lower() in (".txt", ".csv", ".names", ".toml", ".json") or "/" in classes:
        raise UserError(f"--classes {classes}: no such file")
    else:
        names = [classes.strip()]
    if any(not n for n in names):
        raise UserError("--classes has an empty class name")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"--classes lists {dup!r} twice")
    if len(names) < 2:
        raise UserError(f"--classes needs at least 2 classes (got {len(names)})")
    return names, synonyms


def resolve_classes(
    classes: str | list[str] | Mapping[str, Any] | None, source: ImageSource, wording: str | None = None
) -> tuple[list[str], list[str | list[str]], np.ndarray]:
    """Return (class_names, prompt_names, labels) consistent with the source.

    `prompt_names[c]` is how class c is said in prompts: one name, or a list of names when the classes come
    from a table giving several (`cat = ["cat", "kitten", "tabby cat"]`: every name is prompted through
    every template and votes for its class). `wording` (e.g. "number {}") turns each name into its prompt
    name; by default built-ins use their spec wording and everything else the name itself. The model always
    answers with the plain class names.

    For a labelled folder, the names must be the sub-folders' (in any order: labels follow them).
    For a built-in dataset, given names replace its wording and must match its class count.
    """
    if wording is not None and not is_template(wording):
        raise UserError(f"--wording {wording!r} needs {TEMPLATE_RULE}")
    given, synonyms = parse_classes(classes)
    names, prompts, labels = _resolve(given, source)
    said: list[str | list[str]] = list(prompts if wording is None else names)  # wording words the plain names
    if synonyms is not None:
        said = [synonyms[name] if len(synonyms[name]) > 1 else synonyms[name][0] for name in names]
    if wording is not None:
        said = [[wording.format(n) for n in p] if isinstance(p, list) else wording.format(p) for p in said]
    return names, said, labels


def _resolve(given: list[str] | None, source: ImageSource) -> tuple[list[str], list[str], np.ndarray]:
    info = dataset_info(source)
    if source.class_names is None:  # unlabeled folder
        if given is None:
            raise UserError(f"{source.root} has no class sub-folders: pass --classes a,b,c or --classes FILE")
        return given, given, source.labels.copy()
    if given is None:
        names = list(source.class_names)
        prompts = info.prompt_names(names) if info else names
        return names, prompts, source.labels.copy()
    if len(given) != len(source.class_names):
        raise UserError(
            f"--classes gives {len(given)} classes but {source.root} has {len(source.class_names)} "
            f"({', '.join(source.class_names[:5])}{', ...' if len(source.class_names) > 5 else ''})"
        )
    if info is not None:  # built-in: positional, the flag only rewords
        return given, given, source.labels.copy()
    unknown = sorted(set(source.class_names) - set(given))
    if unknown:
        raise UserError(
            f"--classes does not name the class sub-folder(s) {', '.join(unknown[:3])} of {source.root}; "
            "for a labelled folder the class names are its sub-folder names"
        )
    remap = np.asarray([given.index(name) for name in source.class_names], dtype=np.int64)
    labels = np.where(source.labels >= 0, remap[np.maximum(source.labels, 0)], -1)
    return given, given, labels
