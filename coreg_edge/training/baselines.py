"""Baselines in the same trainer, for honest comparison on the same data, views and budget.

proden: PRODEN (soft targets = own predictions restricted to the candidate set, refreshed every batch);
cc: classifier-consistent partial-label loss (-log of the candidate mass);
ce-top1: cross-entropy on the annotator's single best guess (CLIP's zero-shot argmax; for synthetic
         files one candidate drawn uniformly per item with the seed), i.e. distilling zero-shot;
supervised: cross-entropy on the true labels (the upper bound; needs ground truth).
All use weak views, one network, SGD + cosine like Co-Reg.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from coreg_edge.algorithm import cc_loss, initial_proden_targets, proden_loss, update_proden_targets
from coreg_edge.training.context import Context, Peer
from coreg_edge.training.methods import EpochInputs


def _proden(logits: torch.Tensor, ctx: Context, peer: Peer, idx: torch.Tensor) -> torch.Tensor:
    return proden_loss(logits, peer.soft_targets[idx])


def _proden_refresh(logits: torch.Tensor, ctx: Context, peer: Peer, idx: torch.Tensor) -> None:
    peer.soft_targets[idx] = update_proden_targets(logits.detach().softmax(1), ctx.candidates[idx])


def initial_soft_targets(ctx: Context, peer: Peer) -> None:
    """PRODEN starts from the uniform distribution over each item's candidates."""
    peer.soft_targets = initial_proden_targets(ctx.candidates)


@dataclass(frozen=True)
class Baseline:
    """One network, weak views: a loss on its logits (and what to refresh after each step)."""

    loss: Callable[[torch.Tensor, Context, Peer, torch.Tensor], torch.Tensor]
    after_step: Callable[[torch.Tensor, Context, Peer, torch.Tensor], None] | None = None


BASELINE_LOSSES: dict[str, Baseline] = {
    "proden": Baseline(_proden, _proden_refresh),
    "cc": Baseline(lambda logits, ctx, peer, idx: cc_loss(logits, ctx.candidates[idx])),
    "ce-top1": Baseline(lambda logits, ctx, peer, idx: F.cross_entropy(logits, ctx.top1[idx])),
    "supervised": Baseline(lambda logits, ctx, peer, idx: F.cross_entropy(logits, ctx.labels[idx])),
}
BASELINES = tuple(BASELINE_LOSSES)


def baseline_epoch(ctx: Context, peer: Peer, method: str, epoch: int, train_rows: torch.Tensor) -> dict:
    baseline = BASELINE_LOSSES[method]
    peer.net.train()
    sums, watch, steps = ctx.sums(), ctx.watch(epoch, method), 0
    for step, batch in enumerate(ctx.batches(train_rows, ctx.batch_size, min_size=2)):
        mine = ctx.local(batch)  # this rank's slice (the whole batch in one process)
        idx = mine.to(ctx.device)
        with ctx.autocast():
            logits = peer.logits(ctx.views.weak(ctx.fetch(mine))).float()
        loss = baseline.loss(logits, ctx, peer, idx)
        watch.add(loss, step)
        peer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        peer.optimizer.step()
        if baseline.after_step is not None:  # with every rank's logits: one set of soft targets everywhere
            baseline.after_step(ctx.gather(logits.detach(), len(batch)), ctx, peer, batch.to(ctx.device))
        sums.add("loss", loss)
        steps += 1
    watch.check()
    ctx.group.average_buffers(peer.net)
    return {method: sums.read().get("loss", 0.0) / max(steps, 1)}


def baseline_phase(inputs: EpochInputs) -> dict[str, Any]:
    """A baseline's epoch as the trainer records it (`baseline_epoch` looked up at call time)."""
    method = inputs.settings.method
    loss = baseline_epoch(inputs.ctx, inputs.peers[0], method, inputs.epoch, inputs.train_rows)
    return {"phase": method, "loss": {"a": loss}}
