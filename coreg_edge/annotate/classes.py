"""Class names for annotate: from the flag (read in the one grammar of coreg_edge/classes.py), the folder's
sub-folders, or the built-in dataset; and how each class is said in prompts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from coreg_edge.annotate.templates import TEMPLATE_RULE, is_template
from coreg_edge.classes import read_classes, remap_labels
from coreg_edge.data import ImageSource, dataset_info
from coreg_edge.errors import UserError


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
    parsed = read_classes(classes, minimum=2) if classes is not None else None
    given, synonyms = (list(parsed.names), parsed.synonyms) if parsed is not None else (None, None)
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
    return given, given, remap_labels(source.labels, source.class_names, given)
