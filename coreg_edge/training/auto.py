"""Defaults that follow the data (docs/ALGORITHM.md#defaults): what `train` chooses when a setting is left
unset, and why, in one place. Recipes that set a value keep it (the paper recipes set every one).

- batch size: the largest power of two with at least ~STEPS_PER_EPOCH steps per epoch, within [16, 256]
  (small data needs steps more than it needs big batches); under torchrun it is per process, chosen for the
  process's share of the items, so that the global batch (x processes) keeps the steps per epoch;
- learning rate: LR_PER_32 per 32 items of the global batch (linear scaling from the demo's measured 0.05
  at batch 32, the rule timm applies to the global batch), at most MAX_LR; a pretrained start uses a fifth of it for the new heads (the backbone gets
  `backbone_lr_scale` of that);
- strong views: the weak view below STRONG_MIN_SIZE px (RandAugment + Cutout erase the class of an 8-16 px
  image), the dataset's rule above;
- warm-up: ends when the held-out hit rate stops rising (`WarmupEnd`), within [20%, 50%] of the epochs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from coreg_edge.algorithm.schedule import WARMUP_BOUNDS, warmup_bounds  # noqa: F401 - read here too
from coreg_edge.errors import UserError

STEPS_PER_EPOCH = 40
MIN_BATCH, MAX_BATCH = 16, 256
LR_PER_32 = 0.05
MAX_LR = 0.1
PRETRAINED_LR_FACTOR = 0.2
STRONG_MIN_SIZE = 24
WARMUP_PATIENCE = 2  # epochs without a gain of MIN_GAIN in the held-out hit rate
WARMUP_MIN_GAIN = 0.01


def choose_batch_size(num_items: int, processes: int = 1) -> tuple[int, str]:
    """The batch per process: chosen for each process's share of the items."""
    share = -(-num_items // processes)
    target = max(1, share // STEPS_PER_EPOCH)
    size = min(MAX_BATCH, max(MIN_BATCH, 2 ** int(math.log2(target))))
    steps = max(1, num_items // (size * processes))
    if processes > 1:
        return size, f"{num_items} items over {processes} processes: global batch {size * processes}, about {steps} steps per epoch"
    return size, f"{num_items} items: about {steps} steps per epoch"


def choose_lr(batch_size: int, pretrained: bool, processes: int = 1) -> tuple[float, str]:
    """From the global batch (batch_size per process x processes)."""
    lr = min(MAX_LR, LR_PER_32 * batch_size * processes / 32)
    why = f"{LR_PER_32:g} per 32 items of batch, at most {MAX_LR:g}"
    if processes > 1:
        why = f"{LR_PER_32:g} per 32 items of the global batch {batch_size * processes}, at most {MAX_LR:g}"
    if pretrained:
        lr *= PRETRAINED_LR_FACTOR
        why += f", x{PRETRAINED_LR_FACTOR:g} for a pretrained start"
    return round(lr, 6), why


def choose_strong_views(image_size: int, dataset_rule: str) -> tuple[str, str]:
    if image_size < STRONG_MIN_SIZE:
        return "weak", f"{image_size} px < {STRONG_MIN_SIZE} px: RandAugment + Cutout would erase the class"
    return dataset_rule, f"{image_size} px: the dataset's rule"


@dataclass
class WarmupEnd:
    """Ends an automatic warm-up on a label-free signal: the peers' mean held-out hit rate has gained less
    than `min_gain` over its best before the last `patience` epochs (it flattened), but never before
    `low` nor after `high` epochs."""

    low: int
    high: int
    patience: int = WARMUP_PATIENCE
    min_gain: float = WARMUP_MIN_GAIN
    history: list[float] = field(default_factory=list)
    ended: int | None = None  # warm-up epochs, once decided
    why: str = ""

    def observe(self, epoch: int, hit_rate: float) -> bool:
        """Record warm-up epoch `epoch`'s score; True when the warm-up ends after it."""
        self.history.append(hit_rate)
        done = epoch + 1
        if done < self.low:
            return False
        if done >= self.high:
            self.ended, self.why = done, f"the most warm-up epochs allowed ({self.high})"
            return True
        if len(self.history) <= self.patience or math.isnan(hit_rate):
            return False
        before = max(self.history[: -self.patience])
        recent = max(self.history[-self.patience :])
        if recent - before < self.min_gain:
            self.ended = done
            self.why = (
                f"the held-out hit rate flattened ({before:.3f} -> {recent:.3f} over the last {self.patience} "
                f"epochs, gain < {self.min_gain:g})"
            )
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WarmupEnd:
        return cls(**state)


def resolve_settings(
    settings: Any, num_items: int, image_size: int, dataset_rule: str, co_training: bool, processes: int = 1
):
    """TrainSettings with every unset choice made -> (settings, {name: {"value", "why"}}).

    Stored resolved in config.json, so a resumed run (or another version) computes the same thing. An lr
    that is given is the global batch's, used as it is (as timm's --lr).
    """
    chosen: dict[str, dict[str, Any]] = {}
    batch_size = settings.batch_size
    if batch_size is None:
        batch_size, why = choose_batch_size(num_items, processes)
        chosen["batch_size"] = {"value": batch_size, "why": why}
    coreg = settings.coreg
    if coreg.lr is None:
        lr, why = choose_lr(batch_size, settings.pretrained_backbone is not None, processes)
        chosen["lr"] = {"value": lr, "why": why}
        if coreg.min_lr > lr:
            raise UserError(f"--set min_lr={coreg.min_lr:g} is above the chosen lr {lr:g} ({why}); set lr too")
        coreg = dataclasses.replace(coreg, lr=lr)
    strong_augment = settings.strong_augment
    if strong_augment == "auto":
        strong_augment, why = choose_strong_views(image_size, dataset_rule)
        chosen["strong_augment"] = {"value": strong_augment, "why": why}
    if co_training and settings.warmup is None:
        low, high = warmup_bounds(settings.epochs)
        chosen["warmup"] = {"value": f"{low}-{high}", "why": "ends when the held-out hit rate flattens"}
    resolved = dataclasses.replace(settings, batch_size=batch_size, coreg=coreg, strong_augment=strong_augment)
    return resolved, chosen


def describe(chosen: dict[str, dict[str, Any]]) -> str:
    """One line for the log: 'chosen: batch 32 (why); lr 0.05 (why); ...'."""
    names = {"batch_size": "batch", "lr": "lr", "strong_augment": "strong views", "warmup": "warm-up"}
    return "chosen: " + "; ".join(f"{names[k]} {v['value']} ({v['why']})" for k, v in chosen.items())
