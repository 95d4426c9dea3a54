"""Annotation: CLIP (or the synthetic protocol, or the simulated CLIP stand-in) -> candidate-label sets.

Names load on first use, so the annotator registry (annotate/registry.py) imports without numpy or PIL: the
CLI builds its --annotator choices from it.
"""

from coreg_edge.utils import lazy_exports

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
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
