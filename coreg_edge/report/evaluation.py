"""The selected network's answers on the run's evaluation split, for the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreg_edge.data import reopen
from coreg_edge.errors import UserError
from coreg_edge.exporters.images import run_labels


@dataclass(frozen=True)
class EvalAnswers:
    predicted: np.ndarray  # int64 (N,)
    labels: np.ndarray  # int64 (N,), the run's class order
    class_names: list[str]
    peer: str
    source: str


def eval_answers(run: Path, quiet: bool = True) -> tuple[EvalAnswers | None, str | None]:
    """(answers, None), or (None, why there are none): no evaluation split, no labels, images moved."""
    # lazy: runs loads torch, and the report package imports torch-free (`coreg-edge info` on a device)
    from coreg_edge.runs import FinishedRun

    trained = FinishedRun(run)
    config = trained.config
    if not config.get("eval_data"):
        return None, "the run has no evaluation split (train --eval-data, or a built-in dataset's test split)"
    try:
        source, name = reopen(config["eval_data"], None, option="--eval-data")
    except UserError as exc:
        return None, f"its evaluation images cannot be read now ({exc})"
    labels = run_labels(source, trained.class_names)
    known = np.flatnonzero(labels >= 0)
    if not len(known):
        return None, f"{name} has no labels"
    peer = trained.resolve_peer("selected")
    probs = trained.probabilities(source, known, peer=peer, quiet=quiet, desc="report: evaluating")
    return EvalAnswers(probs.argmax(1).astype(np.int64), labels[known], trained.class_names, peer, name), None
