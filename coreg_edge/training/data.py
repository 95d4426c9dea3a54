"""Training data: the annotated items decoded once to uint8 at the model's input size (training/image_store.py).

Decoding and resizing go through the runtime's `resize_and_crop`, so the evaluation view training sees is
bit-identical to what a device computes (docs/FORMATS.md#images-and-preprocessing). Augmented views are then
cheap tensor ops on the training device (training/views.py), with no PIL in the step loop.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coreg_edge.annotation_file import Annotation
from coreg_edge.classes import class_positions
from coreg_edge.data import ImageSource, dataset_info, open_source
from coreg_edge.digests import file_sha256
from coreg_edge.errors import UserError
from coreg_edge.runtime.preprocess import INTERPOLATIONS, PreprocessConfig
from coreg_edge.training.image_store import TRAINING, ImageStore, build_store

DEFAULT_MEAN_STD = 0.5  # folders of unknown statistics: the spec's SVHN/EuroSAT/GTSRB choice


def preprocess_for(
    source: ImageSource,
    image_size: int | None,
    channels: int | None,
    pretrained: Mapping[str, Any] | None = None,
) -> PreprocessConfig:
    """The evaluation transform for a source: built-ins use their own size and statistics (square resize);
    folders resize the shorter side then centre-crop (photos are rarely square).

    `pretrained` (timm's pretrained_cfg of a pretrained backbone) replaces the statistics with those the
    weights were trained with: its mean, std and interpolation, its crop_pct (resize to size / crop_pct,
    then centre-crop), and its input size unless `image_size` is given. The resize rule stays the data's.
    """
    info = dataset_info(source)
    channels = channels or source.channels
    if info is not None:
        size = image_size or info.image_size
        mean, std = info.mean, info.std
        rule = "square"
    else:
        size = image_size or 32
        mean = std = (DEFAULT_MEAN_STD,) * channels
        rule = "shorter_side"
    resize, interpolation = size, "bilinear"
    if pretrained is not None:
        size = image_size or int(pretrained["input_size"][-2])
        mean, std = tuple(pretrained["mean"]), tuple(pretrained["std"])
        if pretrained.get("interpolation") in INTERPOLATIONS:
            interpolation = pretrained["interpolation"]
        resize = max(size, math.floor(size / float(pretrained.get("crop_pct") or 1.0)))  # timm's scale size
    if len(mean) != channels:
        mean, std = (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels
    return PreprocessConfig(
        channels=channels,
        input_size=(size, size),
        resize_rule=rule,
        resize_size=resize,
        interpolation=interpolation,
        crop=(size, size),
        mean=mean,
        std=std,
    )


@dataclass
class TrainingSet:
    """The annotated items: their images behind fetch(), candidate sets, ground truth (-1 unknown)."""

    store: ImageStore  # uint8 rows at the input size, in memory or on disk (training/image_store.py)
    candidates: torch.Tensor  # bool (N, C)
    labels: torch.Tensor  # int64 (N,)
    item_ids: list[str]
    top1: torch.Tensor  # int64 (N,): the annotator's single best guess (ce-top1)

    def __len__(self) -> int:
        return len(self.item_ids)


def annotator_top1(annotation: Annotation, seed: int) -> np.ndarray:
    """CLIP's zero-shot argmax, or for synthetic files one candidate drawn uniformly with the seed."""
    if annotation.zero_shot_probs.shape[1]:
        return annotation.zero_shot_probs.argmax(1).astype(np.int64)
    rng = np.random.default_rng(seed)
    draws = rng.random(annotation.num_items)
    counts = annotation.candidates.sum(1)
    picks = np.minimum((draws * counts).astype(np.int64), counts - 1)
    order = np.argsort(~annotation.candidates, axis=1, kind="stable")  # candidate columns first
    return order[np.arange(annotation.num_items), picks].astype(np.int64)


def load_training_set(
    annotation: Annotation,
    source: ImageSource,
    config: PreprocessConfig,
    seed: int,
    device: torch.device,
    *,
    cache: str = "auto",
    quiet: bool = False,
    workers: int = 0,
) -> TrainingSet:
    indices = source.indices_of(annotation.item_ids)
    store = build_store(source, indices, config, device, cache=cache, quiet=quiet, what=TRAINING,
                        workers=workers)  # fmt: skip
    return TrainingSet(
        store=store,
        candidates=torch.from_numpy(annotation.candidates.copy()),
        labels=torch.from_numpy(annotation.labels.astype(np.int64)),
        item_ids=list(annotation.item_ids),
        top1=torch.from_numpy(annotator_top1(annotation, seed)),
    )


@dataclass
class EvalSet:
    """A labelled evaluation split (e.g. digits:test), cached like the training set."""

    name: str
    store: ImageStore
    labels: torch.Tensor


def load_eval_set(
    data: str,
    class_names: list[str],
    config: PreprocessConfig,
    device: torch.device,
    *,
    cache: str = "auto",
    download: bool = False,
    quiet: bool = False,
    workers: int = 0,
    option: str = "--eval",
) -> EvalSet:
    source = open_source(data, download=download, channels=config.channels)
    if not source.has_labels:
        raise UserError(f"{option} {data}: has no ground truth (needs class sub-folders or a built-in split)")
    labels = source.labels
    if source.class_names is not None and list(source.class_names) != list(class_names):
        # any of the annotation's classes, by name or by its folder name (labels/review write class_folders);
        # a reviewed sample need not hold every class
        positions = class_positions(source.class_names, class_names)
        unknown = [name for name, k in zip(source.class_names, positions, strict=True) if k < 0]
        if unknown:
            raise UserError(
                f"{option} {data}: its {len(source.class_names)} classes ({', '.join(source.class_names[:4])}, ...) "
                f"are not the annotation's {len(class_names)} ({', '.join(class_names[:4])}, ...); "
                f"{unknown[0]!r} is not one of them"
            )
        labels = positions[labels]
    # --val selects the peer by accuracy on the user's own labels: each image once, one label. --eval only
    # reports, on test splits as published (FER2013's has copies): its accuracy stays comparable with others'.
    keep = distinct_images(source, f"{option} {data}") if option == "--val" else np.arange(len(source))
    store = build_store(source, keep, config, device, cache=cache, quiet=quiet, what=data,
                        workers=workers)  # fmt: skip
    return EvalSet(data, store, torch.as_tensor(labels[keep], dtype=torch.long))


def distinct_images(source: ImageSource, what: str) -> np.ndarray:
    """The indices of a labelled folder to evaluate on: each image once. The same image (the same file
    content, whatever its name) in two class folders has no one true label, so it is refused, naming both
    files; copies within one class would count the image twice in the accuracy that selects the peer, so the
    first is kept and a warning says how many were left out (the folder stays as it is). Only files whose
    size another file shares are read and hashed. Built-ins are the datasets as published: all kept."""
    path_of = getattr(source, "path", None)
    everything = np.arange(len(source))
    if path_of is None or len(source) < 2:
        return everything
    by_size: dict[int, list[int]] = defaultdict(list)
    for index in everything:
        try:
            by_size[path_of(int(index)).stat().st_size].append(int(index))
        except OSError:
            continue  # unreadable: decoding it says so
    by_digest: dict[str, list[int]] = defaultdict(list)
    for same_size in by_size.values():
        for index in same_size if len(same_size) > 1 else ():
            try:
                by_digest[file_sha256(path_of(index))].append(index)
            except OSError:
                continue
    copies: list[tuple[int, int]] = []  # (the copy left out, the image kept)
    for group in by_digest.values():
        first = min(group)
        for index in sorted(group)[1:]:
            if source.labels[index] != source.labels[first]:
                raise UserError(
                    f"{what}: {path_of(first)} and {path_of(index)} are the same image in two classes "
                    f"({_class(source, first)}, {_class(source, index)}); keep it in the one it belongs to"
                )
            copies.append((index, first))
    if not copies:
        return everything
    copy, kept = min(copies)
    warnings.warn(
        f"{what}: {len(copies)} file(s) repeat an image of the same class (e.g. {path_of(copy)} = {path_of(kept)}); "
        "each image is counted once",
        stacklevel=2,
    )
    left_out = {index for index, _ in copies}
    return np.asarray([i for i in everything if int(i) not in left_out], dtype=np.int64)


def _class(source: ImageSource, index: int) -> str:
    label = int(source.labels[index])
    return source.class_names[label] if source.class_names is not None else str(label)
