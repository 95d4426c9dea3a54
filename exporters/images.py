"""Which real images calibrate int8 and which check parity: disjoint by construction.

Calibration draws from the run's training data (config["data"], or the annotation file's data block).
Parity uses the evaluation split (config["eval_data"]) when the run has one; when it has none, or fewer
than `parity_images`, a held-out slice of training items (a fixed seeded permutation's tail) makes up the
rest, and calibration never draws from that slice. The slice depends only on the seed and the parity
count, so `--check-only` later picks the same images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from coreg_edge.annotation_file import load
from coreg_edge.classes import remap_labels
from coreg_edge.data import ImageSource, reopen
from coreg_edge.errors import UserError
from coreg_edge.runtime.image import ImageDecodeError

EVALUATION, HELD_OUT, CALIBRATION, FINE_TUNE = "evaluation", "held-out training", "calibration", "fine-tuning"


@dataclass(frozen=True)
class Subset:
    """Some items of one source: their indices and labels in the RUN's class order (-1 unknown)."""

    source: ImageSource
    name: str
    role: str
    indices: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def keys(self) -> set[tuple[str, int]]:
        return {(self.name, int(i)) for i in self.indices}

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "role": self.role,
            "count": len(self),
            "labelled": bool((self.labels >= 0).any()),
        }


@dataclass(frozen=True)
class ImagePlan:
    """Calibration items (None when not quantizing), the parity items (one Subset per source), and the
    training items quantization-aware fine-tuning may use (None unless asked for; never parity's)."""

    calibration: Subset | None
    parity: tuple[Subset, ...]
    fine_tune: Subset | None = None

    @property
    def disjoint(self) -> bool:
        if self.calibration is None:
            return True
        parity_keys = set().union(*(part.keys() for part in self.parity)) if self.parity else set()
        tuned = self.fine_tune.keys() if self.fine_tune is not None else set()
        return not ((self.calibration.keys() | tuned) & parity_keys)

    @property
    def num_parity(self) -> int:
        return sum(len(part) for part in self.parity)


def data_block(config: dict[str, Any], run: str | os.PathLike[str]) -> dict[str, Any]:
    """The training data's {source, root, split, channels}: config["data"], else the annotation's."""
    block = config.get("data")
    if not block and config.get("annotation"):
        path = Path(config["annotation"])
        if not path.is_absolute() and not path.exists():
            path = Path(run) / path
        block = load(path).data
    if not block or "root" not in block:
        raise UserError(
            f"{run}: the run's config names no training data (config.json 'data'), needed to calibrate"
        )
    return block


def run_labels(source: ImageSource, class_names: Sequence[str]) -> np.ndarray:
    """The source's labels mapped by class name (or its folder name) onto the run's class order; -1 where
    unknown."""
    if source.class_names is None or not len(source.labels):
        return np.full(len(source), -1, dtype=np.int64)
    return remap_labels(source.labels, source.class_names, class_names)


def plan_images(
    config: dict[str, Any],
    run: str | os.PathLike[str],
    *,
    calibration_images: int = 256,
    parity_images: int = 256,
    seed: int = 0,
    calibrate: bool = True,
    fine_tune_images: int = 0,
    data: str | None = None,
    eval_data: str | None = None,
) -> ImagePlan:
    """Choose calibration items (training data) and parity items (evaluation split, topped up with held-out
    training items); the two never share an item. The training data is opened only when it is needed
    (calibrate, or a top-up), so an fp32 export works where only the evaluation split is at hand. `data`:
    where the training images are now, when they moved since training; `eval_data` likewise for the
    evaluation split. `fine_tune_images`: that many training items (parity's never) for quantization-aware
    fine-tuning, drawn in the same order as the calibration items (which it holds when it is larger)."""
    if calibration_images < 1:
        raise UserError(f"--calibration-images must be >= 1 (got {calibration_images})")
    class_names = config["class_names"]
    parity: list[Subset] = []
    recorded_eval = config.get("eval_data")
    if recorded_eval or eval_data:
        source, name = reopen(recorded_eval or eval_data, eval_data, option="--eval-data")
        parity.append(
            Subset(source, name, EVALUATION, np.arange(len(source)), run_labels(source, class_names))
        )
    shortfall = max(0, parity_images - sum(len(part) for part in parity))
    if not (calibrate or shortfall):
        return ImagePlan(None, tuple(parity))
    train, train_name = reopen(data_block(config, run), data)
    order = np.random.default_rng(seed).permutation(len(train))
    held = min(shortfall, len(train) // 2)  # calibration keeps at least half of the training items
    train_labels = run_labels(train, class_names)
    if held:
        tail = np.sort(order[len(order) - held :])
        parity.append(Subset(train, train_name, HELD_OUT, tail, train_labels[tail]))
    calibration = fine_tune = None
    if calibrate:
        chosen = np.sort(order[: len(order) - held][:calibration_images])
        calibration = Subset(train, train_name, CALIBRATION, chosen, train_labels[chosen])
        if fine_tune_images > 0:
            chosen = np.sort(order[: len(order) - held][:fine_tune_images])
            fine_tune = Subset(train, train_name, FINE_TUNE, chosen, train_labels[chosen])
    plan = ImagePlan(calibration, tuple(parity), fine_tune)
    if not plan.disjoint:  # only when eval_data names the training data itself
        raise UserError(
            f"{run}: eval_data {recorded_eval or eval_data!r} is the training data; calibration and parity images must be disjoint"
        )
    return plan


def iter_batches(
    subsets: Sequence[Subset], batch_size: int, skipped: list[str] | None = None
) -> Iterator[tuple[list[Image.Image], np.ndarray, np.ndarray]]:
    """Yield (PIL images, run labels, is-evaluation mask) in batches; undecodable items are skipped
    (their ids appended to `skipped`)."""
    images: list[Image.Image] = []
    labels: list[int] = []
    is_eval: list[bool] = []
    for part in subsets:
        for index, label in zip(part.indices, part.labels, strict=True):
            try:
                images.append(part.source.load(int(index)))
            except ImageDecodeError:
                if skipped is not None:
                    skipped.append(part.source.item_ids[int(index)])
                continue
            labels.append(int(label))
            is_eval.append(part.role == EVALUATION)
            if len(images) == batch_size:
                yield images, np.asarray(labels), np.asarray(is_eval)
                images, labels, is_eval = [], [], []
    if images:
        yield images, np.asarray(labels), np.asarray(is_eval)
