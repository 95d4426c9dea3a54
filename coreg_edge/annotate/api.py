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
from coreg_edge.annotate.clip import LOGIT_SCALE, ClipAnnotator, load_clip
from coreg_edge.annotate.examples import VOTER as EXAMPLES_VOTER
from coreg_edge.annotate.examples import Examples, class_means, load_examples, nearest_mean_votes
from coreg_edge.annotate.modes import candidate_sets
from coreg_edge.annotate.registry import get_annotator
from coreg_edge.annotate.simulated import OPTION_NAMES, describe_knobs, image_feature, resolve_knobs, simulate
from coreg_edge.annotate.synthetic import synthetic_candidates
from coreg_edge.annotate.templates import load_templates
from coreg_edge.annotation_file import Annotation
from coreg_edge.data import ImageSource, open_source
from coreg_edge.errors import UserError
from coreg_edge.locks import locks_output
from coreg_edge.runtime.image import ImageDecodeError, pixel_limit
from coreg_edge.settings.annotate import AnnotateSettings
from coreg_edge.settings.fields import build
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


def _warn_ignored(annotator: Any, s: AnnotateSettings) -> None:
    """One warning naming the options given for other annotators (they would be silently ignored)."""
    import dataclasses

    from coreg_edge.annotate.registry import claimed_options
    from coreg_edge.settings.fields import cli_flag

    defaults = {f.name: f.default for f in dataclasses.fields(AnnotateSettings)}
    others = sorted(claimed_options() - set(annotator.options))
    given = [cli_flag(name) for name in others if getattr(s, name) != defaults[name]]
    if given:
        warnings.warn(f"the {annotator.name} annotator ignores {', '.join(given)}", stacklevel=3)


@dataclass
class AnnotateJob:
    """What an annotator gets: the items, the classes and the settings (annotate/registry.py)."""

    data: str
    source: ImageSource
    class_names: list[str]
    prompt_names: list[str | list[str]]
    labels: np.ndarray  # ground truth, -1 unknown
    settings: AnnotateSettings
    skips: _Skips
    quiet: bool


@dataclass
class AnnotatorResult:
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
    settings: AnnotateSettings | None = None,
    *,
    quiet: bool = False,
    **options: Any,
) -> Annotation:
    """Annotate DATA with candidate-label sets and (when `out` is given) write the file atomically.

    `settings` (an AnnotateSettings) and/or its fields as keywords (keywords win):
    `annotator="clip"`: open_clip zero-shot votes of every template, combined by `mode`.
    `annotator="synthetic"`: the benchmark protocol (needs ground truth): partial rate q, noise rate eta.
    `annotator="simulated"`: an instance-dependent CLIP stand-in (needs ground truth): `preset` ("easy" or
    "hard"), each knob (`shots`, `sim_templates`, `template_bias`, `item_noise`, `temperature`,
    `feature_size`) overriding the preset's value unless None.
    `wording` ("number {}") is how a class name reads in prompts; the file keeps the plain names.
    """
    s = build(AnnotateSettings, settings, options)
    with pixel_limit(s.max_image_pixels):  # restored afterwards: the limit is this call's, not the process's
        if out is not None and Path(out).suffix != ".npz":
            raise UserError(f"--out {out}: an annotation file ends in .npz (did you mean {out}.npz?)")
        source = open_source(data, download=s.download, data_dir=s.data_dir, channels=s.channels)
        class_names, prompt_names, labels = resolve_classes(s.classes, source, s.wording)
        skips = _Skips(s.strict)
        annotator = get_annotator(s.annotator)
        _warn_ignored(annotator, s)
        if annotator.needs_labels and not (labels >= 0).all():
            raise UserError(
                f"the {annotator.name} annotator needs ground truth, and {data} has none "
                "(use a folder with one sub-folder per class, or a built-in dataset)"
            )
        result = annotator.annotate(AnnotateJob(data, source, class_names, prompt_names, labels, s, skips, quiet))
        identity: dict[str, Any] = {"kind": s.annotator, "model": None, "pretrained": None, "mode": None,
                                    "k": None, "ratio": None, "partial_rate": None, "noise_rate": None,
                                    "seed": s.seed, **result.identity}  # fmt: skip

        keep = np.asarray([i for i in range(len(source)) if i not in skips.indices], dtype=np.int64)
        if len(keep) == 0:
            raise UserError(f"{data}: no readable images")
        keep, rejected = _reject(keep, result, s.reject if "reject" in annotator.options else None, source)
        if len(keep) == 0:
            raise UserError(f"--reject {s.reject}: every item was rejected; lower it")
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
                **({"max_image_pixels": s.max_image_pixels} if s.max_image_pixels else {}),
            },
            skipped=skips.items,
            rejected=rejected,
            extra={"prompt_names": prompt_names, "coreg_edge_version": __version__},
        )
        if out is not None:
            annotation.save(out)
        return annotation


def _readable(source: ImageSource, skips: _Skips, quiet: bool) -> Iterator[tuple[int, Image.Image]]:
    """(index, image) of every readable item, in order; each unreadable one goes to `skips`."""
    for i in progress(range(len(source)), desc="reading images", quiet=quiet):
        try:
            image = source.load(i)
        except ImageDecodeError as exc:
            skips.add(i, source.item_ids[i], str(exc))
            continue
        yield i, image


def synthetic_annotator(job: AnnotateJob) -> AnnotatorResult:
    """The benchmark protocol: no votes, no probabilities; images are only checked to be readable."""
    source, s, skips, quiet = job.source, job.settings, job.skips, job.quiet
    labels, num_classes = job.labels, len(job.class_names)
    if source.can_fail:
        for _ in _readable(source, skips, quiet):
            pass
    n = len(source)
    return AnnotatorResult(
        candidates=synthetic_candidates(labels, num_classes, s.partial_rate, s.noise_rate, s.seed),
        votes=np.zeros((n, 0), dtype=np.int16),
        probs=np.zeros((n, 0), dtype=np.float32),
        templates=[],
        identity={"partial_rate": s.partial_rate, "noise_rate": s.noise_rate},
    )


def simulated_knobs(s: AnnotateSettings) -> dict[str, Any]:
    """The simulator's knobs as used: its preset with the given ones applied (a retuned preset re-runs)."""
    return describe_knobs(resolve_knobs(s.preset, {name: getattr(s, name) for name in OPTION_NAMES.values()}))


def simulated_annotator(job: AnnotateJob) -> AnnotatorResult:
    """The instance-dependent CLIP stand-in, on the readable items' pixels."""
    data, source, s, skips, quiet = job.data, job.source, job.settings, job.skips, job.quiet
    labels, num_classes = job.labels, len(job.class_names)
    knobs = resolve_knobs(s.preset, {name: getattr(s, name) for name in OPTION_NAMES.values()})
    readable: list[int] = []
    rows: list[np.ndarray] = []
    for i, image in _readable(source, skips, quiet):
        readable.append(i)
        rows.append(image_feature(image, knobs.feature_size))
    if not rows:
        raise UserError(f"{data}: no readable images")
    sim = simulate(np.stack(rows), labels[readable], num_classes, knobs, s.seed)
    n, t = len(source), knobs.templates
    result = AnnotatorResult(
        candidates=np.zeros((n, num_classes), dtype=bool),
        votes=np.zeros((n, t), dtype=np.int16),
        probs=np.full((n, num_classes), 1.0 / num_classes, dtype=np.float32),
        templates=[f"simulated-{j}" for j in range(t)],
        identity={"preset": s.preset, **describe_knobs(knobs)},
    )
    result.candidates[readable] = sim.candidates
    result.votes[readable] = sim.votes
    result.probs[readable] = sim.zero_shot_probs
    if s.examples:  # the examples' mean pixels (standardised as the weak classifier's features) vote too
        examples = load_examples(s.examples, job.class_names, source.channels, _root(source))
        items = np.stack(rows)
        mean, std = items.mean(0), items.std(0) + 1e-6
        pixels = np.stack([image_feature(examples.load(i), knobs.feature_size) for i in range(len(examples))])
        means = class_means((pixels - mean) / std, examples.classes, num_classes)
        column = np.zeros(n, dtype=np.int16)
        column[readable] = nearest_mean_votes((items - mean) / std, means, "euclidean")
        _add_voter(result, column, readable, examples.describe(job.class_names))
    return result


def _reject(
    keep: np.ndarray, result: AnnotatorResult, threshold: float | None, source: ImageSource
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Items whose best zero-shot probability is below `threshold` leave the annotation (listed instead)."""
    if threshold is None or result.probs.shape[1] == 0:  # nothing to reject on
        return keep, []
    score = result.probs[keep].max(1)
    out = score < threshold
    rejected = [{"item": source.item_ids[int(i)], "score": round(float(p), 6)} for i, p in zip(keep[out], score[out], strict=True)]
    return keep[~out], rejected


def _root(source: ImageSource) -> str | None:
    return source.root if source.kind == "folder" else None


def _add_voter(result: AnnotatorResult, column: np.ndarray, rows: list[int] | np.ndarray, info: dict) -> None:
    """The examples' voter: one more votes column, its vote always in the candidate set."""
    result.votes = np.concatenate([result.votes, column[:, None]], axis=1)
    result.candidates[rows, column[rows]] = True
    result.templates = [*result.templates, EXAMPLES_VOTER]
    result.identity = {**result.identity, "examples": info}


def clip_annotator(job: AnnotateJob) -> AnnotatorResult:
    """open_clip zero-shot votes of every template, combined into candidate sets by `mode`."""
    source, prompt_names, s, skips, quiet = job.source, job.prompt_names, job.settings, job.skips, job.quiet
    template_list = load_templates(s.templates)  # a bad template file fails before the model loads
    if not template_list and not s.examples:
        raise UserError("--templates none leaves no voter: give --examples EXAMPLES/ (or a template set)")
    examples = load_examples(s.examples, job.class_names, source.channels, _root(source)) if s.examples else None
    bundle = load_clip(s.clip_model, s.pretrained, resolve_device(s.device))
    clip = ClipAnnotator(bundle, template_list, prompt_names)
    means = _example_means(clip, examples, len(job.class_names)) if examples is not None else None
    votes, probs, example_votes = _run_clip(clip, source, s.batch_size, s.workers, skips, quiet, means)
    mode = s.mode
    result = AnnotatorResult(
        candidates=candidate_sets(mode, votes=votes, probs=probs, k=s.k, ratio_threshold=s.ratio)
        if votes.shape[1] else np.zeros((len(source), len(job.class_names)), dtype=bool),
        votes=votes,
        probs=probs,
        templates=template_list,
        identity={
            "model": s.clip_model,
            "pretrained": s.pretrained,
            "mode": mode,
            "k": s.k if mode != "union-top1" else None,
            "ratio": s.ratio if mode == "ratio" else None,
        },
    )
    if examples is not None:
        readable = np.asarray([i for i in range(len(source)) if i not in skips.indices], dtype=np.int64)
        _add_voter(result, example_votes, readable, examples.describe(job.class_names))
    return result


def _example_means(clip: ClipAnnotator, examples: Examples, num_classes: int) -> np.ndarray:
    """(C, D) mean CLIP embedding of each class's examples (NaN rows for classes without)."""
    import torch

    images = torch.stack([clip.bundle.preprocess(examples.load(i)) for i in range(len(examples))])
    features = clip.encode_images(images).cpu().numpy().astype(np.float64)
    return class_means(features, examples.classes, num_classes)


def _run_clip(
    clip: ClipAnnotator, source: ImageSource, batch_size: int, workers: int, skips: _Skips, quiet: bool,
    example_means: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Encode every readable image once: (template votes, probabilities, the examples' votes). Unreadable
    images get placeholder rows, dropped later. With no templates the probabilities are the examples'
    (softmax of LOGIT_SCALE x cosine to each class's mean example)."""
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
    example_votes = np.zeros(n, dtype=np.int16)
    if t:
        clip.text_features()  # once, before the image loop
    for indices, images, bad in progress(loader, desc="annotating", total=len(loader), quiet=quiet):
        for i, why in bad:
            skips.add(i, source.item_ids[i], why)
        if images is None:
            continue
        features = clip.encode_images(images)
        if t:
            votes[indices], probs[indices] = clip.vote(features)
        if example_means is not None:
            batch = features.cpu().numpy().astype(np.float64)
            example_votes[indices] = nearest_mean_votes(batch, example_means, "cosine")
            if not t:
                probs[indices] = _softmax_to_means(batch, example_means)
    return votes, probs, example_votes


def _softmax_to_means(features: np.ndarray, means: np.ndarray) -> np.ndarray:
    norm = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    logits = LOGIT_SCALE * features @ np.nan_to_num(norm, nan=0.0).T
    logits[:, np.isnan(means).any(1)] = -np.inf
    logits -= logits.max(1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)
