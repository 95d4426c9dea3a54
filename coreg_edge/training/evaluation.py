"""Predictions, accuracy and the label-free scores used for best-epoch and peer selection."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from coreg_edge.algorithm import division_losses


@torch.no_grad()
def predict_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    store: Any,
    rows: torch.Tensor,
    view: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 512,
) -> torch.Tensor:
    """Logits (len(rows), C) float32 on the CPU of a store's rows (training/image_store.py), batch by batch
    through `view`."""
    chunks = [
        forward(view(store.fetch(rows[i : i + batch_size]))).float().cpu() for i in range(0, len(rows), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros((0, 0))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Top-1 accuracy; None when there is no ground truth (any label -1)."""
    if len(labels) == 0 or bool((labels < 0).any()):
        return None
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean())


def candidate_scores(logits: torch.Tensor, candidates: torch.Tensor) -> dict[str, float]:
    """Label-free quality on held-out annotated items.

    `hit_rate`: share of predictions inside the candidate set (higher is better); `division_loss`: mean
    -log max_{j in Y} p_j, the spec's division loss (lower is better; the tie-break).
    """
    if len(logits) == 0:
        return {"hit_rate": float("nan"), "division_loss": float("nan")}
    probs = logits.softmax(1)
    hits = candidates.gather(1, logits.argmax(1, keepdim=True)).float().mean()
    return {"hit_rate": float(hits), "division_loss": float(division_losses(probs, candidates).mean())}


def select_peer(scores: dict[str, dict[str, float]], by: str) -> tuple[str, str]:
    """Pick "a" or "b": by validation accuracy when labelled --val exists, else hit rate then division loss."""
    a, b = scores["a"], scores["b"]
    if by == "val_accuracy":
        if a["val_accuracy"] != b["val_accuracy"]:
            pick = "a" if a["val_accuracy"] > b["val_accuracy"] else "b"
            return pick, f"higher accuracy on the labelled --val data ({scores[pick]['val_accuracy']:.4f})"
        by = "hit_rate"
    if math.isnan(a["hit_rate"]) or math.isnan(b["hit_rate"]):
        return "a", "no held-out items to score the peers (--holdout 0 or too little data): kept peer a"
    if abs(a["hit_rate"] - b["hit_rate"]) > 1e-9:
        pick = "a" if a["hit_rate"] > b["hit_rate"] else "b"
        return pick, (
            f"more held-out predictions inside the candidate sets ({scores[pick]['hit_rate']:.4f} vs "
            f"{scores['b' if pick == 'a' else 'a']['hit_rate']:.4f})"
        )
    pick = "a" if a["division_loss"] <= b["division_loss"] else "b"
    return (
        pick,
        f"equal hit rate; lower division loss on held-out items ({scores[pick]['division_loss']:.4f})",
    )


def class_shift(logits: torch.Tensor, candidates: torch.Tensor) -> float:
    """Label-free collapse score in [0, 1]: the total variation distance between the predicted class shares
    and the candidate sets' own (each set's mass spread evenly over its classes).

    A network that learns the classes predicts roughly the classes its annotator named (a few points off); one
    that collapses onto a class moves half or more of the mass (0.4 and above on 10 classes).
    """
    if len(logits) == 0:
        return float("nan")
    c = candidates.shape[1]
    predicted = torch.bincount(logits.argmax(1), minlength=c).float() / len(logits)
    sets = candidates.float()
    named = (sets / sets.sum(1, keepdim=True).clamp(min=1)).mean(0)
    return float(0.5 * (predicted - named).abs().sum())
