"""Class names: the one grammar every command reads them in, and the one remap of a labelled source's classes
onto a model's order.

Grammar (annotate --classes, predict / bench --classes, Classifier(class_names=...), a recipe's classes.names):
a list; a comma-separated string (`cat,dog`); one name; or a file: a text file with one name per line (`#`
comments), a JSON list, or a `.toml` / `.json` table giving each class one or several prompt names
(`cat = ["cat", "kitten"]`: annotate prompts every name; the other readers take the class names only).

Remap (training's --eval / --val, export parity, the report, annotate's labelled folders and --examples): a
source's class names find their place in a model's class order by name, else by the folder name that
`labels --format imagefolder` and `review` write for a class (`cat/dog` -> `cat_dog`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.errors import UserError
from coreg_edge.utils import parse_toml

NAME_FILE_SUFFIXES = (".txt", ".csv", ".names", ".toml", ".json")  # a missing file by these is no class name


@dataclass(frozen=True)
class ClassNames:
    """What a classes value gives: the names in order, and each class's prompt names where a table gave them."""

    names: tuple[str, ...]
    synonyms: dict[str, list[str]] | None = None


def read_classes(
    value: str | Sequence[str] | Mapping[str, Any], *, option: str = "--classes", minimum: int = 1
) -> ClassNames:
    """Parse a classes value in the grammar above; errors are one line naming `option` (the flag, key or
    keyword the caller gave it by) and, for a file, the file. At least `minimum` names."""
    synonyms = None
    if isinstance(value, Mapping):
        synonyms = _names_table(value, option, "table")
        names = list(synonyms)
    elif not isinstance(value, str):
        names = [str(name).strip() for name in value]
    elif Path(value).is_file():
        names, synonyms = _read_file(Path(value), option)
    elif "," in value:
        names = [name.strip() for name in value.split(",")]
    elif Path(value).suffix.lower() in NAME_FILE_SUFFIXES or "/" in value:
        raise UserError(f"{option} {value}: no such file")
    else:
        names = [value.strip()]
    if any(not name for name in names):
        raise UserError(f"{option} has an empty class name")
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise UserError(f"{option} lists {duplicate!r} twice")
    if len(names) < minimum:
        raise UserError(f"{option} needs at least {minimum} classes (got {len(names)})")
    return ClassNames(tuple(names), synonyms)


def _read_file(path: Path, option: str) -> tuple[list[str], dict[str, list[str]] | None]:
    text = _read_text(path, option)
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            table = parse_toml(text, str(path))
        except UserError as exc:
            raise UserError(f"{option} {exc}") from exc
        synonyms = _names_table(table, option, str(path))
        return list(synonyms), synonyms
    if suffix == ".json" or text.lstrip().startswith("["):
        try:
            loaded = json.loads(text, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            raise UserError(f"{option} {path}: not valid JSON ({exc})") from exc
        if isinstance(loaded, list):
            return [str(name).strip() for name in loaded], None
        synonyms = _names_table(loaded, option, str(path))
        return list(synonyms), synonyms
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")], None


def _read_text(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    except UnicodeDecodeError as exc:
        raise UserError(f"{option} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot read it ({exc.strerror})") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate is not None:
        raise ValueError(f"class {duplicate!r} is given twice")
    return dict(pairs)


def _names_table(table: Any, option: str, where: str) -> dict[str, list[str]]:
    """{class: name or [names]} -> {class: [names]}, each name a non-empty string, no name given to two
    classes (it would vote for both)."""
    if not isinstance(table, Mapping) or not table:
        raise UserError(f"{option} {where}: expected a table of class = name or [names, ...]")
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for cls, names in table.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise UserError(f"{option} {where}: {cls!r} must be a name or a non-empty list of names")
        key = str(cls).strip()
        if key in out:
            raise UserError(f"{option} {where}: class {key!r} is given twice")
        out[key] = list(dict.fromkeys(n.strip() for n in names))
        for name in out[key]:
            if owner.setdefault(name, key) != key:
                raise UserError(f"{option} {where}: the name {name!r} is given to both {owner[name]!r} and {key!r}")
    return out


def class_folder_name(name: str) -> str:
    """The folder a class's images go in (labels --format imagefolder, review): letters, digits and `-_. `
    kept, anything else as `_`; a labelled folder's sub-folder named so is read back as that class."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in name).strip(" .")
    return cleaned or "_"


def class_folders(class_names: Sequence[str]) -> list[str]:
    """Each class's folder name; two classes that would share one folder are a one-line error."""
    folders = [class_folder_name(name) for name in class_names]
    for i, folder in enumerate(folders):
        j = folders.index(folder)
        if j != i:
            raise UserError(
                f"classes {class_names[j]!r} and {class_names[i]!r} both become the folder {folder!r}; "
                "rename one of them (annotate --classes)"
            )
    return folders


def class_positions(folder_names: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Each of a labelled source's class names -> its index in `class_names`, -1 for none: the name itself,
    else the folder name class_folder_name gives a class, when exactly one class has that folder name."""
    folders = [class_folder_name(name) for name in class_names]
    by_folder = {folder: i for i, folder in enumerate(folders) if folders.count(folder) == 1}
    position = {name: i for i, name in enumerate(class_names)}
    return np.asarray([position.get(name, by_folder.get(name, -1)) for name in folder_names], dtype=np.int64)


def remap_labels(labels: np.ndarray, source_names: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """A labelled source's labels (int, -1 unknown, in `source_names`' order) in `class_names`' order (by
    class_positions); -1 where unknown or where the source's class is none of `class_names`."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, dtype=np.int64)
    known = labels >= 0
    out[known] = class_positions(source_names, class_names)[labels[known]]
    return out
