"""Class names: from the flag (a,b,c or a file), the folder's sub-folders, or the built-in dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coreg_edge.data import ImageSource, dataset_info
from coreg_edge.errors import UserError


def parse_classes(classes: str | list[str] | None) -> list[str] | None:
    """A list, a path to a text file (one name per line), or a comma-separated string."""
    if classes is None:
        return None
    if isinstance(classes, (list, tuple)):
        names = [str(c).strip() for c in classes]
    elif Path(classes).is_file():
        lines = Path(classes).read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    elif "," in classes:
        names = [c.strip() for c in classes.split(",")]
    elif Path(classes).suffix in (".txt", ".csv", ".names") or "/" in classes:
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
    return names


def resolve_classes(
    classes: str | list[str] | None, source: ImageSource, wording: str | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """Return (class_names, prompt_names, labels) consistent with the source.

    `wording` (e.g. "number {}") turns a class name into its prompt name; by default built-ins use their
    spec wording and everything else the name itself. The model always answers with the plain names.

    For a labelled folder, the names must be the sub-folders' (in any order: labels follow them).
    For a built-in dataset, given names replace its wording and must match its class count.
    """
    if wording is not None and wording.count("{}") != 1:
        raise UserError(f"--wording {wording!r} needs exactly one {{}} where the class name goes")
    names, prompts, labels = _resolve(classes, source)
    if wording is not None:
        prompts = [wording.format(name) for name in names]
    return names, prompts, labels


def _resolve(classes: str | list[str] | None, source: ImageSource) -> tuple[list[str], list[str], np.ndarray]:
    given = parse_classes(classes)
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
