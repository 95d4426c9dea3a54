"""The field's synthetic noisy partial annotator (docs/ALGORITHM.md#synthetic), for benchmarks."""

from __future__ import annotations

import numpy as np

from coreg_edge.annotate.job import AnnotateJob, AnnotatorResult
from coreg_edge.runtime.image import ImageDecodeError
from coreg_edge.utils import progress


def synthetic_candidates(
    labels: np.ndarray,
    num_classes: int,
    partial_rate: float,
    noise_rate: float,
    seed: int = 0,
) -> np.ndarray:
    """Uniform partial rate q, then noise rate eta.

    Every wrong label joins the set independently with probability q (the true label is always in);
    then with probability eta the true label is swapped for a random label outside the set, so the set
    size is unchanged. A set that already holds every class cannot be made noisy and is left as is.
    Expected mean set size 1 + (C - 1) q; coverage about 1 - eta. Both are probabilities, checked where
    they are given (AnnotateSettings).
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = len(labels)
    candidates = rng.random((n, num_classes)) < partial_rate
    rows = np.arange(n)
    candidates[rows, labels] = True
    flip = rng.random(n) < noise_rate
    # One uniform draw per item picks the replacement among the labels outside the set.
    pick = rng.random(n)
    for i in np.flatnonzero(flip):
        outside = np.flatnonzero(~candidates[i])
        if len(outside) == 0:
            continue
        candidates[i, labels[i]] = False
        candidates[i, outside[int(pick[i] * len(outside))]] = True
    return candidates


def synthetic_annotator(job: AnnotateJob) -> AnnotatorResult:
    """The benchmark protocol as an annotator: no voters, no probabilities (its sets come from ground truth);
    images are only checked to be readable."""
    source, s = job.source, job.settings
    if source.can_fail:
        for i in progress(range(len(source)), desc="reading images", quiet=job.quiet):
            try:
                source.load(i)
            except ImageDecodeError as exc:
                job.skips.add(i, source.item_ids[i], str(exc))
    n = len(source)
    return AnnotatorResult(
        candidates=synthetic_candidates(job.labels, job.num_classes, s.partial_rate, s.noise_rate, s.seed),
        votes=np.zeros((n, 0), dtype=np.int16),
        probs=np.zeros((n, 0), dtype=np.float32),
        voters=[],
        identity={"partial_rate": s.partial_rate, "noise_rate": s.noise_rate},
    )
