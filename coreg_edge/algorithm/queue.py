"""The contrastive queue of one network: past keys with their soft pseudo-labels and P flags (spec 3, 9)."""

from __future__ import annotations

from typing import Any

import torch


class ContrastiveQueue:
    """A ring of `size` entries: key (D), soft target (C), in-P flag, and whether the slot is filled.

    The reference code starts its queue with random keys, random labels and random (float) P flags, which
    then act as contrast entries; ours starts empty and `valid` marks the filled slots, so unfilled ones
    never enter the loss. Never reset during a run (spec section 9).
    """

    def __init__(
        self,
        size: int,
        dim: int,
        num_classes: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.keys = torch.zeros((size, dim), device=device, dtype=dtype)
        self.targets = torch.zeros((size, num_classes), device=device, dtype=dtype)
        self.in_p = torch.zeros(size, device=device, dtype=torch.bool)
        self.valid = torch.zeros(size, device=device, dtype=torch.bool)
        self.ptr = 0

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def labels(self) -> torch.Tensor:
        """Hard labels of the entries: argmax of the stored soft targets."""
        return self.targets.argmax(dim=-1)

    def __len__(self) -> int:
        return int(self.valid.sum())

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, targets: torch.Tensor, in_p: torch.Tensor) -> None:
        """Write a batch at the pointer, wrapping around and overwriting the oldest entries.

        Call after the loss of the step (the batch's keys are already in that step's contrast set).
        A batch larger than the queue keeps its last `size` rows.
        """
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.size:
            keys, targets, in_p = keys[-self.size :], targets[-self.size :], in_p[-self.size :]
            self.ptr = (self.ptr + n - self.size) % self.size
            n = self.size
        positions = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[positions] = keys.detach().to(self.keys)
        self.targets[positions] = targets.detach().to(self.targets)
        self.in_p[positions] = in_p.to(device=self.keys.device, dtype=torch.bool)
        self.valid[positions] = True
        self.ptr = (self.ptr + n) % self.size

    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys.clone(),
            "targets": self.targets.clone(),
            "in_p": self.in_p.clone(),
            "valid": self.valid.clone(),
            "ptr": torch.tensor(self.ptr),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("keys", "targets", "in_p", "valid"):
            current = getattr(self, name)
            if state[name].shape != current.shape:
                raise ValueError(f"queue {name} shape {tuple(state[name].shape)} != {tuple(current.shape)}")
            current.copy_(state[name])
        self.ptr = int(state["ptr"])

    def to(self, device: torch.device | str) -> ContrastiveQueue:
        for name in ("keys", "targets", "in_p", "valid"):
            setattr(self, name, getattr(self, name).to(device))
        return self
