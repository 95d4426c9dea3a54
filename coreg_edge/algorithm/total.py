"""The Co-Reg objective of one post-warm-up step: L = L_cr + 0.1 L_prot + 0.1 L_cont (spec section 5.6)."""

from __future__ import annotations

import torch

from .schedule import CoRegSchedule


def total_loss(
    l_cr: torch.Tensor,
    l_prot: torch.Tensor | None,
    l_cont: torch.Tensor | None,
    epoch: int,
    schedule: CoRegSchedule,
) -> torch.Tensor:
    """Weighted sum of the three losses; before `schedule.loss_start_epoch` only L_cr counts.

    Before the start the representation losses may be `None` (the trainer still updates the queue and
    prototypes from the first post-warm-up epoch, spec section 9, but need not compute their losses).
    """
    if schedule.is_warmup(epoch):
        raise ValueError(f"epoch {epoch} is a warm-up epoch; use warmup_loss")
    weights = schedule.loss_weights(epoch)
    loss = weights.self_training * l_cr
    if weights.prototype or weights.contrastive:
        if l_prot is None or l_cont is None:
            raise ValueError(
                f"epoch {epoch}: L_prot and L_cont are on from epoch {schedule.loss_start_epoch}"
            )
        loss = loss + weights.prototype * l_prot + weights.contrastive * l_cont
    return loss
