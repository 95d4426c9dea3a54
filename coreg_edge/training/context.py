"""What one training run holds while it runs: peers, data on the device, generators, autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coreg_edge.errors import UserError


class TrainingError(UserError):
    """Training cannot go on (a NaN loss); the last good checkpoint is kept."""


@dataclass
class Peer:
    """One network of the pair (or the single network of a baseline) with its per-peer state."""

    name: str
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    forward_train: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    key_net: torch.nn.Module | None = None
    queue: Any = None  # ContrastiveQueue
    table: Any = None  # PredictionTable (distribution alignment)
    history: Any = None  # LossHistory (division)
    soft_targets: torch.Tensor | None = None  # PRODEN

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_train(images)[0]


@dataclass
class Context:
    """Shared by the method implementations; no globals, so two runs can live in one process."""

    device: torch.device
    store: Any  # training.image_store.ImageStore: fetch(rows) -> uint8 (B, C, H, W) on the device
    candidates: torch.Tensor  # bool (N, C) on the device
    labels: torch.Tensor  # int64 (N,), -1 unknown
    top1: torch.Tensor
    views: Any  # training.views.Views
    batch_size: int
    generator: torch.Generator  # batch order (CPU, so CPU and CUDA runs draw the same)
    rng: np.random.Generator  # MixUp lambdas
    amp_dtype: torch.dtype | None = None

    @property
    def num_items(self) -> int:
        return len(self.store)

    def fetch(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 images of training rows, on the device (the one way the methods read images)."""
        return self.store.fetch(rows)

    @property
    def num_classes(self) -> int:
        return int(self.candidates.shape[1])

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def batches(
        self, indices: torch.Tensor, batch_size: int, drop_last: bool = False
    ) -> Iterator[torch.Tensor]:
        """Shuffled mini-batches of `indices` (a CPU tensor), from the run's own generator."""
        order = indices[torch.randperm(len(indices), generator=self.generator)]
        stop = len(order) - (len(order) % batch_size if drop_last and len(order) >= batch_size else 0)
        for start in range(0, stop, batch_size):
            batch = order[start : start + batch_size]
            if len(batch):
                yield batch


class Diverged(TrainingError):
    """A loss or a prediction became NaN or infinite; the trainer adds what to do next."""


def check_finite(loss: torch.Tensor, epoch: int, step: int, what: str) -> None:
    if not torch.isfinite(loss.detach()).all():
        raise Diverged(f"{what} loss became {float(loss.detach()):.3g} at epoch {epoch}, step {step}")
