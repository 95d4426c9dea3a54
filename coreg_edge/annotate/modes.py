"""Candidate-set rules (pure numpy): from per-template votes or template-averaged probabilities.

docs/ALGORITHM.md#annotation: `union-top1` (the paper's default: the union of every template's top-1),
`topk` and `ratio` (both on the template-averaged probability, as in the reference code).
"""

from __future__ import annotations

import numpy as np

from coreg_edge.choices import CANDIDATE_MODES

MODES = CANDIDATE_MODES


def union_top1(votes: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, T) template votes -> (N, C) bool: a class is a candidate if any template voted for it."""
    candidates = np.zeros((votes.shape[0], num_classes), dtype=bool)
    rows = np.repeat(np.arange(votes.shape[0]), votes.shape[1])
    candidates[rows, votes.reshape(-1).astype(np.int64)] = True
    return candidates


def topk(probs: np.ndarray, k: int = 5) -> np.ndarray:
    """The k most probable classes (ties broken by class index, lowest first)."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    candidates = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(candidates, order, True, axis=1)
    return candidates


def ratio(probs: np.ndarray, ratio: float = 0.5, k: int = 5) -> np.ndarray:
    """Among the top k, keep classes whose probability is >= ratio * the top one (the top always kept)."""
    top = topk(probs, k)
    threshold = ratio * probs.max(axis=1, keepdims=True)
    return top & (probs >= threshold)


def candidate_sets(
    mode: str,
    *,
    votes: np.ndarray,
    probs: np.ndarray,
    k: int = 5,
    ratio_threshold: float = 0.5,
) -> np.ndarray:
    """Dispatch on `mode`; every row of the result has at least one candidate."""
    if mode == "union-top1":
        return union_top1(votes, probs.shape[1])
    if mode == "topk":
        return topk(probs, k)
    if mode == "ratio":
        return ratio(probs, ratio_threshold, k)
    raise ValueError(f"unknown candidate mode {mode!r}; use one of {', '.join(MODES)}")
