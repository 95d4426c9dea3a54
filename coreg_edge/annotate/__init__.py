"""Annotation: CLIP (or the synthetic protocol, or the simulated CLIP stand-in) -> candidate-label sets.

Names load on first use, so the annotator registry (annotate/registry.py) imports without numpy or PIL: the
CLI builds its --annotator choices from it.
"""

import importlib
from typing import Any

_EXPORTS = {
    "AnnotateSettings": "coreg_edge.settings.annotate",
    "DEFAULT_TEMPLATES": "coreg_edge.annotate.templates",
    "IMAGENET_TEMPLATES": "coreg_edge.annotate.templates",
    "MODES": "coreg_edge.annotate.modes",
    "annotate": "coreg_edge.annotate.api",
    "annotator_names": "coreg_edge.annotate.registry",
    "candidate_sets": "coreg_edge.annotate.modes",
    "load_templates": "coreg_edge.annotate.templates",
    "register_annotator": "coreg_edge.annotate.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
