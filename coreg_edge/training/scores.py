"""What the networks score, label-free and labelled: every epoch's held-out scores and class shift, --eval /
--val accuracy, and the rejection thresholds; the pair's ensemble (the mean of a and b) is `ensemble_logits`.
"""

from __future__ import annotations

from typing import Any

import torch

from coreg_edge.training.context import Context, Peer
from coreg_edge.training.evaluation import accuracy, candidate_scores, class_shift, predict_logits


def ensemble_logits(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the pair's ensemble to per-peer logits when there are two peers: the mean of a's and b's logits
    (what `export --peer ensemble` computes). Returns the same dict."""
    if len(logits) == 2:
        logits["ensemble"] = (logits["a"] + logits["b"]) / 2
    return logits


def evaluate(
    ctx: Context, peers: list[Peer], holdout_rows, eval_set, val_set, probe_rows=None
) -> dict[str, Any]:
    """Held-out (label-free) scores every epoch, each peer's class shift on the held-out items and
    `probe_rows` (more items, a steadier share of each class), and test accuracy when --eval is given.
    Images stream through the stores batch by batch: no split is ever whole on the device."""
    result: dict[str, Any] = {}
    hold_candidates = ctx.candidates[holdout_rows.to(ctx.device)].cpu()
    for p in peers:
        p.net.eval()

    def all_logits(store: Any, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each peer's logits, and the pair's mean (the exported ensemble) when there are two."""
        return ensemble_logits({p.name: predict(ctx, p, store, rows) for p in peers})

    logits = all_logits(ctx.store, holdout_rows)
    result["holdout"] = {k: candidate_scores(v, hold_candidates) for k, v in logits.items()}
    if probe_rows is not None:
        probe = all_logits(ctx.store, probe_rows)
        probe_candidates = torch.cat([hold_candidates, ctx.candidates[probe_rows.to(ctx.device)].cpu()])
        for k, v in probe.items():
            both = torch.cat([logits[k], v]) if len(logits[k]) else v  # no held-out items: (0, 0) logits
            result["holdout"][k]["class_shift"] = class_shift(both, probe_candidates)
    for name, split in (("test_accuracy", eval_set), ("val_accuracy", val_set)):
        if split is None:
            continue
        out = all_logits(split.store, torch.arange(len(split.store)))
        result[name] = {k: accuracy(v, split.labels) for k, v in out.items()}
    for p in peers:
        p.net.train()
    return result


def predict(ctx: Context, peer: Peer, store: Any, rows: torch.Tensor) -> torch.Tensor:
    """A peer's eval-view logits of `rows` of a store: under torchrun each rank predicts its slice and all
    ranks get all the logits."""
    logits = predict_logits(peer.logits, store, ctx.local(rows), ctx.views.eval)
    return ctx.gather(logits, len(rows))


REJECT_ACCEPTS = 0.95  # the share of held-out (known-class) items the rejection threshold lets through


def reject_thresholds(ctx: Context, peers: list[Peer], holdout_rows: torch.Tensor) -> dict[str, Any] | None:
    """Per network (a, b, ensemble), the top-1 probability that 95% of the held-out items reach: `predict
    --reject` answers "none of these" below it. Calibrated on held-out annotated items, never on test labels."""
    if len(holdout_rows) == 0:
        return None
    for p in peers:
        p.net.eval()
    logits = {p.name: predict(ctx, p, ctx.store, holdout_rows) for p in peers}
    for p in peers:
        p.net.train()
    ensemble_logits(logits)
    probs = {name: value.softmax(1) for name, value in logits.items()}
    out: dict[str, Any] = {"accepts": REJECT_ACCEPTS, "items": len(holdout_rows)}
    for name, p in probs.items():
        out[name] = round(float(torch.quantile(p.max(1).values.double(), 1.0 - REJECT_ACCEPTS)), 6)
    return out
