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


class EpochSums:
    """An epoch's statistics summed on the device and read with one transfer at its end: no host sync
    inside a step (each would stall a GPU's queue). float64 sums of float32 values, added in step order,
    are exactly the Python float sums the epochs kept before."""

    def __init__(self, device: torch.device):
        self.device = device
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: torch.Tensor | None) -> None:
        """Add a scalar tensor (None adds 0, as a loss term that is not on yet)."""
        term = torch.zeros((), dtype=torch.float64, device=self.device) if value is None else value.detach().double()
        self._sums[key] = self._sums[key] + term if key in self._sums else term

    def read(self) -> dict[str, float]:
        if not self._sums:
            return {}
        values = torch.stack([v.reshape(()) for v in self._sums.values()]).cpu().tolist()
        return dict(zip(self._sums, values, strict=True))


class FiniteWatch:
    """The first non-finite loss of an epoch, remembered on the device; `check()` reads it once, at the
    epoch's end, and raises Diverged naming the step (the checkpoint of the last good epoch is kept)."""

    def __init__(self, device: torch.device, epoch: int, what: str):
        self.epoch, self.what = epoch, what
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float().reshape(())
        new = ~torch.isfinite(loss) & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)
        self.value = torch.where(new, loss, self.value)

    def check(self) -> None:
        first = int(self.first)
        if first >= 0:
            raise Diverged(f"{self.what} loss became {float(self.value):.3g} at epoch {self.epoch}, step {first}")
