"""`annotate()`: DATA + class names -> one annotation file. The CLI and notebooks both call this."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from coreg_edge import __version__
from coreg_edge.annotate.classes import resolve_classes
from coreg_edge.annotate.clip import DEFAULT_CLIP_MODEL, DEFAULT_PRETRAINED, ClipAnnotator, load_clip
from coreg_edge.annotate.modes import MODES, candidate_sets
from coreg_edge.annotate.simulated import describe_knobs, image_feature, resolve_knobs, simulate
from coreg_edge.annotate.synthetic import synthetic_candidates
from coreg_edge.annotate.templates import load_templates
from coreg_edge.annotation_file import Annotation
from coreg_edge.choices import ANNOTATORS
from coreg_edge.data import ImageSource, open_source
from coreg_edge.errors import UserError
from coreg_edge.locks import locks_output
from coreg_edge.runtime.image import ImageDecodeError, pixel_limit
from coreg_edge.utils import progress, resolve_device


class _Skips:
    """Collects unreadable items: a warning each, or an error with --strict."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.items: list[dict[str, str]] = []
        self.indices: set[int] = set()

    def add(self, index: int, item: str, reason: str) -> None:
        if self.strict:
            raise UserError(f"unreadable image: {reason} (drop --strict to skip such images)")
        warnings.warn(f"skipping unreadable image: {reason}", stacklevel=2)
        self.items.append({"item": item, "reason": reason})
        self.indices.add(index)


@dataclass
class _Result:
    """One annotator's arrays for every item of the source (rows of unreadable items are dropped later)."""

    candidates: np.ndarray
    votes: np.ndarray
    probs: np.ndarray
    templates: list[str]
    identity: dict[str, Any]  # the annotator block's keys that apply to this annotator


@locks_output("out", "annotation file")
def annotate(
    data: str,
    out: str | Path | None = None,
    *,
    classes: str | list[str] | None = None,
    wording: str | None = None,
    annotator: str = "clip",
    clip_model: str = DEFAULT_CLIP_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    mode: str = "union-top1",
    k: int = 5,
    ratio: float = 0.5,
    templates: str = "default",
    partial_rate: float = 0.3,
    noise_rate: float = 0.0,
    preset: str = "easy",
    shots: int | None = None,
    sim_templates: int | None = None,
    template_bias: float | None = None,
    item_noise: float | None = None,
    temperature: float | None = None,
    feature_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 128,
    workers: int = 0,
    strict: bool = False,
    max_image_pixels: int | None = None,
    download: bool = False,
    data_dir: str | Path | None = None,
    channels: int | None = None,
    quiet: bool = False,
) -> Annotation:
    """Annotate DATA with candidate-label sets and (when `out` is given) write the file atomically.

    `annotator="clip"`: open_clip zero-shot votes of every template, combined by `mode`.
    `annotator="synthetic"`: the benchmark protocol (needs ground truth): partial rate q, noise rate eta.
    `annotator="simulated"`: an instance-dependent CLIP stand-in (needs ground truth): `preset` ("easy" or
    "hard"), each knob (`shots`, `sim_templates`, `template_bias`, `item_noise`, `temperature`,
    `feature_size`) overriding the preset's value unless None.
    `wording` ("number {}") is how a class name reads in prompts; the file keeps the plain names.
    """
    with pixel_limit(max_image_pixels):  # restored afterwards: the limit is this call's, not the process's
        if out is not None and Path(out).suffix != ".npz":
            raise UserError(f"--out {out}: an annotation file ends in .npz (did you mean {out}.npz?)")
        if annotator not in ANNOTATORS:
            raise UserError(f"--annotator must be one of {', '.join(ANNOTATORS)} (got {annotator!r})")
        if mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
        if k < 1 or not 0.0 < ratio <= 1.0 or batch_size < 1:
            raise UserError("--k and --batch-size must be >= 1 and --ratio within (0, 1]")
        if workers < 0:
            raise UserError(f"--workers must be >= 0 (got {workers})")
        source = open_source(data, download=download, data_dir=data_dir, channels=channels)
        class_names, prompt_names, labels = resolve_classes(classes, source, wording)
        skips = _Skips(strict)
        if annotator == "synthetic":
            result = _synthetic(data, source, labels, len(class_names), partial_rate, noise_rate, seed,
                                skips, quiet)  # fmt: skip
        elif annotator == "simulated":
            overrides = {"shots": shots, "sim_templates": sim_templates, "template_bias": template_bias,
                         "item_noise": item_noise, "temperature": temperature, "feature_size": feature_size}  # fmt: skip
            result = _simulated(data, source, labels, len(class_names), preset, overrides, seed, skips, quiet)
        else:
            result = _clip(source, prompt_names, clip_model, pretrained, templates, device, mode, k, ratio,
                           batch_size, workers, skips, quiet)  # fmt: skip
        identity: dict[str, Any] = {"kind": annotator, "model": None, "pretrained": None, "mode": None,
                                    "k": None, "ratio": None, "partial_rate": None, "noise_rate": None,
                                    "seed": seed, **result.identity}  # fmt: skip

        keep = np.asarray([i for i in range(len(source)) if i not in skips.indices], dtype=np.int64)
        if len(keep) == 0:
            raise UserError(f"{data}: no readable images")
        annotation = Annotation(
            candidates=result.candidates[keep],
            labels=labels[keep],
            item_ids=[source.item_ids[i] for i in keep],
            class_names=class_names,
            votes=result.votes[keep],
            zero_shot_probs=result.probs[keep],
            templates=result.templates,
            annotator=identity,
            # a raised pixel limit travels with the data: training and export decode the same images
            data={
                **source.describe(),
                **({"max_image_pixels": max_image_pixels} if max_image_pixels else {}),
            },
            skipped=skips.items,
            extra={"prompt_names": prompt_names, "coreg_edge_version": __version__},
        )
        if out is not None:
            annotation.save(out)
        return annotation


def _require_labels(annotator: str, data: str, labels: np.ndarray) -> None:
    if not (labels >= 0).all():
        raise UserError(
            f"the {annotator} annotator needs ground truth, and {data} has none "
            "(use a folder with one sub-folder per class, or a built-in dataset)"
        )


def _readable(source: ImageSource, skips: _Skips, quiet: bool) -> Iterator[tuple[int, Image.Image]]:
    """(index, image) of every readable item, in order; each unreadable one goes to `skips`."""
    for i in progress(range(len(source)), desc="reading images", quiet=quiet):
        try:
            image = source.load(i)
        except ImageDecodeError as exc:
            skips.add(i, source.item_ids[i], str(exc))
            continue
        yield i, image


def _synthetic(
    data: str, source: ImageSource, labels: np.ndarray, num_classes: int, partial_rate: float,
    noise_rate: float, seed: int, skips: _Skips, quiet: bool,
) -> _Result:  # fmt: skip
    """The benchmark protocol: no votes, no probabilities; images are only checked to be readable."""
    _require_labels("synthetic", data, labels)
    if not (0.0 <= partial_rate <= 1.0 and 0.0 <= noise_rate <= 1.0):
        raise UserError("--partial-rate and --noise-rate must be within [0, 1]")
    if source.can_fail:
        for _ in _readable(source, skips, quiet):
            pass
    n = len(source)
    return _Result(
        candidates=synthetic_candidates(labels, num_classes, partial_rate, noise_rate, seed),
        votes=np.zeros((n, 0), dtype=np.int16),
        probs=np.zeros((n, 0), dtype=np.float32),
        templates=[],
        identity={"partial_rate": partial_rate, "noise_rate": noise_rate},
    )


def _simulated(
    data: str, source: ImageSource, labels: np.ndarray, num_classes: int, preset: str,
    overrides: dict[str, Any], seed: int, skips: _Skips, quiet: bool,
) -> _Result:  # fmt: skip
    """The instance-dependent CLIP stand-in, on the readable items' pixels (knobs checked first)."""
    knobs = resolve_knobs(preset, overrides)
    _require_labels("simulated", data, labels)
    readable: list[int] = []
    rows: list[np.ndarray] = []
    for i, image in _readable(source, skips, quiet):
        readable.append(i)
        rows.append(image_feature(image, knobs.feature_size))
    if not rows:
        raise UserError(f"{data}: no readable images")
    sim = simulate(np.stack(rows), labels[readable], num_classes, knobs, seed)
    n, t = len(source), knobs.templates
    result = _Result(
        candidates=np.zeros((n, num_classes), dtype=bool),
        votes=np.zeros((n, t), dtype=np.int16),
        probs=np.full((n, num_classes), 1.0 / num_classes, dtype=np.float32),
        templates=[f"simulated-{j}" for j in range(t)],
        identity={"preset": preset, **describe_knobs(knobs)},
    )
    result.candidates[readable] = sim.candidates
    result.votes[readable] = sim.votes
    result.probs[readable] = sim.zero_shot_probs
    return result


def _clip(
    source: ImageSource, prompt_names: list[str], clip_model: str, pretrained: str | None, templates: str,
    device: str, mode: str, k: int, ratio: float, batch_size: int, workers: int, skips: _Skips, quiet: bool,
) -> _Result:  # fmt: skip
    """open_clip zero-shot votes of every template, combined into candidate sets by `mode`."""
    template_list = load_templates(templates)  # a bad template file fails before the model loads
    bundle = load_clip(clip_model, pretrained, resolve_device(device))
    clip = ClipAnnotator(bundle, template_list, prompt_names)
    votes, probs = _run_clip(clip, source, batch_size, workers, skips, quiet)
    return _Result(
        candidates=candidate_sets(mode, votes=votes, probs=probs, k=k, ratio_threshold=ratio),
        votes=votes,
        probs=probs,
        templates=template_list,
        identity={
            "model": clip_model,
            "pretrained": pretrained,
            "mode": mode,
            "k": k if mode != "union-top1" else None,
            "ratio": ratio if mode == "ratio" else None,
        },
    )


def _run_clip(
    clip: ClipAnnotator, source: ImageSource, batch_size: int, workers: int, skips: _Skips, quiet: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Encode every readable image once; unreadable ones get placeholder rows dropped later."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    preprocess = clip.bundle.preprocess

    class _Images(Dataset):
        def __len__(self) -> int:
            return len(source)

        def __getitem__(self, i: int):
            try:
                return i, preprocess(source.load(i)), ""
            except ImageDecodeError as exc:
                return i, None, str(exc)

    def collate(batch):
        good = [(i, x) for i, x, _ in batch if x is not None]
        bad = [(i, why) for i, x, why in batch if x is None]
        images = torch.stack([x for _, x in good]) if good else None
        return [i for i, _ in good], images, bad

    loader = DataLoader(
        _Images(), batch_size=batch_size, num_workers=workers, collate_fn=collate,
        pin_memory=clip.bundle.device.startswith("cuda"),
    )  # fmt: skip
    n, t, c = len(source), len(clip.templates), clip.num_classes
    votes = np.zeros((n, t), dtype=np.int16)
    probs = np.full((n, c), 1.0 / c, dtype=np.float32)
    clip.text_features()  # once, before the image loop
    for indices, images, bad in progress(loader, desc="annotating", total=len(loader), quiet=quiet):
        for i, why in bad:
            skips.add(i, source.item_ids[i], why)
        if images is None:
            continue
        batch_votes, batch_probs = clip.vote(clip.encode_images(images))
        votes[indices] = batch_votes
        probs[indices] = batch_probs
    return votes, probs
