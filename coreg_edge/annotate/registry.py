"""Annotators by name, as methods and timm models are: one row each, no branch on an annotator's name.

A row says what the annotator is, the AnnotateSettings fields that change its labels (`options`: the
others are ignored by it and left out of `coreg-edge run`'s fingerprint), whether it needs ground truth,
and how it labels. A voting annotator gives `panel(job) -> Panel`: its embedder and voter groups
(annotate/voters.py: each group's `class_features()` and `vote()`), which `vote_items` drives. A protocol
without voters (the synthetic one) gives `protocol(job) -> AnnotatorResult` instead. The built-in rows name
their functions as "module:function", so listing the annotators (the CLI's --annotator choices) imports
nothing heavy. A new annotator is its function and one `register_annotator(Annotator(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.utils import resolve_function


@dataclass(frozen=True)
class Annotator:
    name: str
    summary: str
    panel: str | Callable[[Any], Any] | None = None  # (AnnotateJob) -> Panel, for a voting annotator
    protocol: str | Callable[[Any], Any] | None = None  # (AnnotateJob) -> AnnotatorResult, without voters
    options: tuple[str, ...] = ()  # AnnotateSettings fields that change this annotator's labels
    needs_labels: bool = False  # a benchmark protocol on labelled data, not a real annotator
    # (AnnotateSettings) -> more fingerprint values, e.g. the simulator's knobs resolved from its preset
    describe: str | Callable[[Any], dict[str, Any]] | None = None
    rank: int = 100
    # its voters vote item by item (no whole-set fit): it can be sharded and resumed (annotate/shards.py)
    streaming: bool = False

    def __post_init__(self) -> None:
        if (self.panel is None) == (self.protocol is None):
            raise ValueError(f"annotator {self.name!r}: give exactly one of panel= (voters) or protocol=")

    def fingerprint_extra(self, settings: Any) -> dict[str, Any]:
        return {} if self.describe is None else resolve_function(self.describe)(settings)


_PKG = "coreg_edge.annotate"
_ANNOTATORS: dict[str, Annotator] = {
    row.name: row
    for row in (
        Annotator("clip", "open_clip zero-shot: every template votes its top-1 class", panel=f"{_PKG}.clip:clip_panel",
                  options=("wording", "clip_model", "pretrained", "mode", "k", "ratio", "templates", "examples",
                           "reject"),
                  rank=0, streaming=True),
        Annotator("synthetic", "the benchmark protocol: uniform partial rate q, noise rate eta",
                  protocol=f"{_PKG}.synthetic:synthetic_annotator", options=("partial_rate", "noise_rate"), needs_labels=True,
                  rank=1),
        Annotator("simulated", "an instance-dependent CLIP stand-in on labelled data (benchmarks)",
                  panel=f"{_PKG}.simulated:simulated_panel", needs_labels=True, rank=2,
                  options=("preset", "shots", "sim_templates", "template_bias", "item_noise", "temperature",
                           "feature_size", "examples", "reject"),
                  describe=f"{_PKG}.simulated:simulated_knobs"),
    )
}  # fmt: skip


def register_annotator(annotator: Annotator) -> Annotator:
    """Add an annotator (a name not taken yet); it is then an --annotator choice and a recipe value."""
    if annotator.name in _ANNOTATORS:
        raise ValueError(f"annotator {annotator.name!r} is registered already")
    _ANNOTATORS[annotator.name] = annotator
    return annotator


def annotator_names() -> tuple[str, ...]:
    return tuple(sorted(_ANNOTATORS, key=lambda name: (_ANNOTATORS[name].rank, name)))


def get_annotator(name: str) -> Annotator:
    try:
        return _ANNOTATORS[name]
    except KeyError:
        raise UserError(f"--annotator must be one of {', '.join(annotator_names())} (got {name!r})") from None


def claimed_options() -> set[str]:
    """Every field some annotator claims: a field no annotator claims applies to all of them."""
    return {option for row in _ANNOTATORS.values() for option in row.options}
