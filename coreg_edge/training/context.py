"""What one training run holds while it runs: peers, data on the device, generators, autocast."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coreg_edge.errors import UserError
from coreg_edge.training.distributed import ONE_PROCESS, Group


class TrainingError(UserError):
    """Training cannot go on (a NaN loss); the last good checkpoint is kept."""


@dataclass
class Peer:
    """One network of the pair (or the single network of a baseline) with its per-peer state."""

    name: str
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    forward_train: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # logits and projections
    key_net: torch.nn.Module | None = None
    queue: Any = None  # ContrastiveQueue
    table: Any = None  # PredictionTable (distribution alignment)
    history: Any = None  # LossHistory (division)
    soft_targets: torch.Tensor | None = None  # PRODEN

    forward_logits: Callable[[torch.Tensor], torch.Tensor] | None = None  # logits alone (no projection head)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.forward_logits is None:
            return self.forward_train(images)[0]
        return self.forward_logits(images)


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
    group: Group = ONE_PROCESS  # the torchrun processes (distributed.py); one process by default
    step_generator: torch.Generator | None = None  # draws sized by this rank's slice (MixUp's order)

    def __post_init__(self) -> None:
        if self.step_generator is None:  # one process: the batch order's generator, as before distribution
            self.step_generator = self.generator

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (the batch itself in one process)."""
        return self.group.local(batch)

    def gather(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """All ranks' slices of a global batch of n items, in the batch's order."""
        return self.group.gather(local, n)

    def sums(self) -> EpochSums:
        return EpochSums(self.device, self.group)

    def watch(self, epoch: int, what: str) -> FiniteWatch:
        return FiniteWatch(self.device, epoch, what, self.group)

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

    def batches(self, indices: torch.Tensor, batch_size: int, min_size: int = 1) -> Iterator[torch.Tensor]:
        """Shuffled mini-batches of `indices` (a CPU tensor), from the run's own generator. A last batch of
        fewer than `min_size` items joins the one before it: a network's own batch in train mode passes
        `min_size=2`, as BatchNorm cannot normalise a batch of one image (N % batch == 1 failed there)."""
        order = indices[torch.randperm(len(indices), generator=self.generator)]
        starts = list(range(0, len(order), batch_size))
        if len(starts) > 1 and len(order) - starts[-1] < min_size:
            starts.pop()
        for start, stop in itertools.pairwise([*starts, len(order)]):
            yield order[start:stop]


class Diverged(TrainingError):
    """A loss or a prediction became NaN or infinite; the trainer adds what to do next."""


class EpochSums:
    """An epoch's statistics summed on the device and read with one transfer at its end: no host sync
    inside a step (each would stall a GPU's queue). float64 sums of float32 values, added in step order,
    are exactly the Python float sums the epochs kept before. Under torchrun the read is the mean over ranks
    (of each rank's mean losses; hit and item counts keep their ratio), in the same one transfer."""

    def __init__(self, device: torch.device, group: Group | None = None):
        self.device, self.group = device, group or ONE_PROCESS
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: torch.Tensor | None) -> None:
        """Add a scalar tensor (None adds 0, as a loss term that is not on yet)."""
        term = torch.zeros((), dtype=torch.float64, device=self.device) if value is None else value.detach().double()
        self._sums[key] = self._sums[key] + term if key in self._sums else term

    def read(self) -> dict[str, float]:
        if not self._sums:
            return {}
        stacked = torch.stack([v.reshape(()) for v in self._sums.values()])
        if self.group.active:
            stacked = self.group.sum_(stacked) / self.group.world
        values = stacked.cpu().tolist()
        return dict(zip(self._sums, values, strict=True))


class FiniteWatch:
    """The first non-finite loss of an epoch, remembered on the device; `check()` reads it once, at the
    epoch's end, and raises Diverged naming the step (the checkpoint of the last good epoch is kept). Under
    torchrun every rank learns the first failing step of any rank, so all stop together."""

    def __init__(self, device: torch.device, epoch: int, what: str, group: Group | None = None):
        self.epoch, self.what, self.group = epoch, what, group or ONE_PROCESS
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float().reshape(())
        new = ~torch.isfinite(loss) & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)
        self.value = torch.where(new, loss, self.value)

    def check(self) -> None:
        if self.group.active:
            every = self.group.gather(torch.stack([self.first.double(), self.value.double()]).reshape(1, 2),
                                      self.group.world)  # fmt: skip
            failed = every[every[:, 0] >= 0]
            if len(failed):
                self.first, self.value = failed[failed[:, 0].argmin()].unbind()
                self.first = self.first.long()
        first = int(self.first)
        if first >= 0:
            raise Diverged(
                f"{self.what} loss became {float(self.value):.3g} at epoch {self.epoch}, step {first}"
            )
