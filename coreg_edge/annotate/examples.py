"""Example images as class definitions (`annotate --examples EXAMPLES/`): each class's mean example votes.

EXAMPLES has one sub-folder per class (any subset of the classes, by name) with a few images each. A voting
annotator embeds them with its own embedder, as it embeds the items (CLIP: its image encoder; the simulator:
its grey pixels), takes each class's mean (`ExampleVoters.class_features`), and adds one voter: every item
votes for the class whose mean example is nearest. The vote joins the other voters' in the candidate set
whatever the candidate mode, so a class the text prompts miss can still enter an item's set. The examples
are never training items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.annotate.voters import LOGIT_SCALE, Ballot, Embedder, Voters, as_numpy
from coreg_edge.classes import remap_labels
from coreg_edge.data import open_source
from coreg_edge.data.sources import ImageSource
from coreg_edge.errors import UserError
from coreg_edge.runtime.image import ImageDecodeError

VOTER = "examples:class-mean"  # the voter's name in the annotation file's voters list


@dataclass
class Examples:
    source: ImageSource
    classes: np.ndarray  # int64 (E,): each example's class index in the annotation's class order
    folder: str

    def __len__(self) -> int:
        return len(self.classes)

    def load(self, i: int) -> Any:
        return self.source.load(i)

    def missing(self, class_names: list[str]) -> list[str]:
        """The classes without an example: with no other voter, never a candidate of any item."""
        return [name for c, name in enumerate(class_names) if not (self.classes == c).any()]

    def describe(self, class_names: list[str]) -> dict[str, Any]:
        counts = {name: int((self.classes == c).sum()) for c, name in enumerate(class_names)}
        return {"folder": self.folder, "per_class": {k: v for k, v in counts.items() if v}}


def load_examples(
    folder: str, class_names: list[str], channels: int | None = None, data_root: str | None = None
) -> Examples:
    """The example folder, checked: class sub-folders named after the annotation's classes, images readable,
    and not inside DATA (`data_root`), whose images would then be training items too."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserError(f"--examples {folder}: not a folder (one sub-folder per class of a few images)")
    if data_root is not None and Path(data_root).is_dir():
        inner, outer = path.resolve(), Path(data_root).resolve()
        if inner == outer or outer in inner.parents or inner in outer.parents:
            raise UserError(f"--examples {folder}: overlaps DATA {data_root}; keep the examples in a folder of their own")
    try:
        source = open_source(str(path), channels=channels)
    except UserError as exc:
        raise UserError(f"--examples {exc}") from exc
    if source.class_names is None:
        raise UserError(f"--examples {folder}: needs one sub-folder per class (named as the classes), not loose images")
    unknown = [name for name in source.class_names if name not in class_names]
    if unknown:
        raise UserError(
            f"--examples {folder}: sub-folder {unknown[0]!r} is not one of the classes ({', '.join(class_names[:5])}, ...)"
        )
    for i in range(len(source)):
        try:
            source.load(i)
        except ImageDecodeError as exc:
            raise UserError(f"--examples: {exc}") from exc
    return Examples(source, remap_labels(source.labels, source.class_names, class_names), str(path.resolve()))


def class_means(features: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, D) mean feature per class; NaN rows for classes without examples."""
    means = np.full((num_classes, features.shape[1]), np.nan, dtype=np.float64)
    for c in np.unique(classes):
        means[c] = features[classes == c].mean(0)
    return means


def nearest_mean_votes(features: np.ndarray, means: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """(N,) int16: each item's nearest class mean (classes without examples never win).

    `metric`: "cosine" for normalised embeddings (CLIP), "euclidean" for raw features (pixels).
    """
    have = ~np.isnan(means).any(1)
    usable = means[have]
    if metric == "cosine":
        usable = usable / np.maximum(np.linalg.norm(usable, axis=1, keepdims=True), 1e-12)
        scores = features @ usable.T
    else:
        # -||x - m||^2 up to the per-item constant ||x||^2, without an (N, C, D) array
        scores = 2.0 * features @ usable.T - (usable**2).sum(1)[None, :]
    return np.flatnonzero(have)[scores.argmax(1)].astype(np.int16)


def softmax_to_means(features: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(N, C) softmax of LOGIT_SCALE x cosine to each class's mean (0 for classes without examples)."""
    norm = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    logits = LOGIT_SCALE * features @ np.nan_to_num(norm, nan=0.0).T
    logits[:, np.isnan(means).any(1)] = -np.inf
    logits -= logits.max(1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


class ExampleVoters(Voters):
    """One voter: each item votes for the class whose mean example is nearest in the embedder's space.

    `metric`: "cosine" for normalised embeddings (CLIP; the voter then also scores every class, used as the
    zero-shot probabilities when it is the only voter), "euclidean" with `standardise` for raw features
    (the simulator's pixels, standardised by the items' mean and spread, as its weak classifier is)."""

    in_mode = False  # its vote joins the set whatever the candidate mode

    def __init__(
        self, examples: Examples, embedder: Embedder, class_names: list[str], metric: str = "cosine",
        standardise: bool = False,
    ):  # fmt: skip
        self.names = [VOTER]
        self.examples, self.embedder, self.class_names = examples, embedder, class_names
        self.metric, self.standardise = metric, standardise
        self.center: Any = None
        self.scale: Any = None
        self._means: np.ndarray | None = None

    def fit(self, features: Any, rows: np.ndarray) -> None:
        if self.standardise:
            self.center, self.scale = features.mean(0), features.std(0) + 1e-6

    def _features(self, raw: Any) -> np.ndarray:
        if self.standardise:
            if self.center is None:
                raise RuntimeError("standardised example voters need fit() on the items first")
            return (np.asarray(raw) - self.center) / self.scale
        return as_numpy(raw)

    def class_features(self) -> np.ndarray:
        """(C, D) mean embedding of each class's examples (NaN rows for classes without)."""
        if self._means is None:
            embedded = self.embedder.embed([self.examples.load(i) for i in range(len(self.examples))])
            self._means = class_means(self._features(embedded), self.examples.classes, len(self.class_names))
        return self._means

    def vote(self, features: Any) -> Ballot:
        x, means = self._features(features), self.class_features()
        probs = softmax_to_means(x, means) if self.metric == "cosine" else None
        return Ballot(nearest_mean_votes(x, means, self.metric)[:, None], probs)
