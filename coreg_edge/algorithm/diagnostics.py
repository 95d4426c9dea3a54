"""Label-free health checks of a training run (ours; the paper has none).

The reference code, on short budgets, collapsed every prediction onto one class within an epoch and never
noticed; these checks let a trainer log and react to that without ground truth.
"""

from __future__ import annotations

import torch


def detect_collapse(
    predictions: torch.Tensor, num_classes: int, max_share: float = 0.5
) -> dict[str, float | int | bool]:
    """Share of the most predicted class, number of classes predicted, and whether that looks collapsed.

    `predictions` is (N,) class indices or (N, C) scores (argmax taken). Collapsed = one class takes more
    than `max_share` of the items, or a multi-class problem is predicted as a single class. Set
    `max_share` above the largest class share you expect in the data.
    """
    if predictions.ndim == 2:
        predictions = predictions.argmax(dim=-1)
    if predictions.numel() == 0:
        raise ValueError("detect_collapse needs at least one prediction")
    counts = torch.bincount(predictions.reshape(-1).long(), minlength=num_classes)
    largest_share = float(counts.max()) / predictions.numel()
    classes_predicted = int((counts > 0).sum())
    collapsed = largest_share > max_share or (num_classes > 1 and classes_predicted == 1)
    return {
        "largest_class_share": largest_share,
        "largest_class": int(counts.argmax()),
        "classes_predicted": classes_predicted,
        "collapsed": bool(collapsed),
    }
