"""When each part of Co-Reg is on: warm-up, the lambda_u ramp, the start of the representation losses, the lr.

A `CoRegSchedule` is a `CoRegConfig` resolved against one run's length (see `CoRegConfig.resolve`).
Epochs are 0-indexed: epochs `0 .. warmup_epochs - 1` are warm-up, the rest are Co-Reg epochs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple


def lambda_u_ramp(epoch: float, warmup_epochs: int, ramp_epochs: int, max_weight: float = 1.0) -> float:
    """Weight of the MSE on U: 0 at the first post-warm-up epoch, rising linearly to `max_weight`.

    Spec section 5.3 / 9: `clip((epoch - warmup) / ramp, 0, 1) * max_weight`. The reference code passes a
    fractional epoch (`epoch + batch_index / iterations_per_epoch`), so the ramp is smooth within an epoch;
    pass a float to do the same.
    """
    if ramp_epochs < 1:
        raise ValueError(f"ramp_epochs must be >= 1, got {ramp_epochs}")
    progress = (epoch - warmup_epochs) / ramp_epochs
    return max_weight * min(max(progress, 0.0), 1.0)


def cosine_lr(epoch: float, base_lr: float, min_lr: float, horizon: int) -> float:
    """Cosine learning rate set once per epoch: `min + (base - min) * (1 + cos(pi * epoch / horizon)) / 2`.

    Spec section 6 / 9. The reference code hard-codes `horizon = 800` (so 100-epoch runs end near 9.6e-3);
    `CoRegSchedule` uses the run's own epoch count unless `CoRegConfig.lr_horizon` says otherwise.
    Epochs beyond the horizon stay at `min_lr`.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    progress = min(max(epoch / horizon, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


class LossWeights(NamedTuple):
    """Multipliers of the three Co-Reg losses at one epoch (spec section 5.6)."""

    self_training: float
    prototype: float
    contrastive: float


@dataclass(frozen=True)
class CoRegSchedule:
    """Concrete, run-length-specific schedule. Build it with `CoRegConfig.resolve(epochs, warmup_epochs)`.

    `loss_start` counts post-warm-up epochs that run without L_prot and L_cont: they are on from epoch
    `warmup_epochs + loss_start`. The paper's text says "10 epochs after warm-up" (loss_start=10); the
    reference code's condition `epoch > start + warm_up` switches them on one epoch later (loss_start=11).
    Queue, prototypes and key encoder are updated from the first post-warm-up epoch either way (the
    trainer's job).
    """

    epochs: int
    warmup_epochs: int
    loss_start: int
    ramp_epochs: int
    base_lr: float
    min_lr: float
    lr_horizon: int
    lambda_u_max: float
    proto_weight: float
    contrastive_weight: float

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.loss_start < 0:
            raise ValueError(f"loss_start must be >= 0, got {self.loss_start}")
        if self.ramp_epochs < 1:
            raise ValueError(f"ramp_epochs must be >= 1, got {self.ramp_epochs}")

    @property
    def post_warmup_epochs(self) -> int:
        return self.epochs - self.warmup_epochs

    @property
    def loss_start_epoch(self) -> int:
        """First (0-indexed) epoch whose loss includes L_prot and L_cont."""
        return self.warmup_epochs + self.loss_start

    def is_warmup(self, epoch: int) -> bool:
        return epoch < self.warmup_epochs

    def lambda_u(self, epoch: float) -> float:
        return lambda_u_ramp(epoch, self.warmup_epochs, self.ramp_epochs, self.lambda_u_max)

    def representation_losses_active(self, epoch: int) -> bool:
        return epoch >= self.loss_start_epoch

    def loss_weights(self, epoch: int) -> LossWeights:
        """Weights of (L_cr, L_prot, L_cont) at `epoch`; the last two are 0 before `loss_start_epoch`."""
        if self.is_warmup(epoch):
            return LossWeights(0.0, 0.0, 0.0)
        if not self.representation_losses_active(epoch):
            return LossWeights(1.0, 0.0, 0.0)
        return LossWeights(1.0, self.proto_weight, self.contrastive_weight)

    def learning_rate(self, epoch: float) -> float:
        return cosine_lr(epoch, self.base_lr, self.min_lr, self.lr_horizon)

    def describe(self) -> dict[str, float | int]:
        """Plain dict for logs and for printing what a run uses."""
        return {**asdict(self), "loss_start_epoch": self.loss_start_epoch}


# An automatic warm-up lasts between these shares of the epochs (training/auto.py ends it on a label-free
# signal); plain arithmetic, so the settings can check a given --warmup against it.
WARMUP_BOUNDS = (0.2, 0.5)


def warmup_bounds(epochs: int) -> tuple[int, int]:
    """(fewest, most) warm-up epochs of an automatic warm-up; most <= epochs - 1 (Co-Reg needs an epoch)."""
    low = max(1, round(WARMUP_BOUNDS[0] * epochs))
    high = min(epochs - 1, max(low, round(WARMUP_BOUNDS[1] * epochs)))
    return low, high
