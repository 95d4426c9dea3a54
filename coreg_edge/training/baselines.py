"""Baselines in the same trainer, for honest comparison on the same data, views and budget.

proden: PRODEN (soft targets = own predictions restricted to the candidate set, refreshed every batch);
cc: classifier-consistent partial-label loss (-log of the candidate mass);
ce-top1: cross-entropy on the annotator's single best guess (CLIP's zero-shot argmax; for synthetic
         files one candidate drawn uniformly per item with the seed), i.e. distilling zero-shot;
supervised: cross-entropy on the true labels (the upper bound; needs ground truth).
All use weak views, one network, SGD + cosine like Co-Reg.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from coreg_edge.algorithm import cc_loss, proden_loss, update_proden_targets
from coreg_edge.training.context import Context, Peer, check_finite

BASELINES = ("proden", "cc", "ce-top1", "supervised")


def baseline_epoch(ctx: Context, peer: Peer, method: str, epoch: int, train_rows: torch.Tensor) -> dict:
    peer.net.train()
    total, steps = 0.0, 0
    for step, batch in enumerate(ctx.batches(train_rows, ctx.batch_size)):
        idx = batch.to(ctx.device)
        with ctx.autocast():
            logits = peer.logits(ctx.views.weak(ctx.images[idx])).float()
        if method == "proden":
            loss = proden_loss(logits, peer.soft_targets[idx])
        elif method == "cc":
            loss = cc_loss(logits, ctx.candidates[idx])
        elif method == "ce-top1":
            loss = F.cross_entropy(logits, ctx.top1[idx])
        elif method == "supervised":
            loss = F.cross_entropy(logits, ctx.labels[idx])
        else:  # pragma: no cover - validated by the trainer
            raise ValueError(method)
        check_finite(loss, epoch, step, method)
        peer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        peer.optimizer.step()
        if method == "proden":
            peer.soft_targets[idx] = update_proden_targets(logits.detach().softmax(1), ctx.candidates[idx])
        total += float(loss.detach())
        steps += 1
    return {method: total / max(steps, 1)}
