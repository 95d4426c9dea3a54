"""Annotation: CLIP (or the synthetic protocol, or the simulated CLIP stand-in) -> candidate-label sets."""

from coreg_edge.annotate.api import annotate
from coreg_edge.annotate.modes import MODES, candidate_sets
from coreg_edge.annotate.templates import DEFAULT_TEMPLATES, IMAGENET_TEMPLATES, load_templates
from coreg_edge.settings.annotate import AnnotateSettings

__all__ = [
    "AnnotateSettings",
    "MODES",
    "DEFAULT_TEMPLATES",
    "IMAGENET_TEMPLATES",
    "annotate",
    "candidate_sets",
    "load_templates",
]
