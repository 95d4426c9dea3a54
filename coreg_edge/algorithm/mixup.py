"""MixUp for self-training (spec section 5.3): lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


def sample_mixup_lambda(alpha: float, generator: np.random.Generator) -> float:
    """One mixing weight in [0.5, 1]: the mixed sample stays closer to its first input, whose targets
    dominate. A numpy Generator keeps it seedable (torch's Beta takes no generator)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    lam = float(generator.beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def sample_permutation(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Partner indices for MixUp, drawn on the generator's device (CPU by default) and moved to `device`."""
    return torch.randperm(n, generator=generator).to(device)


class MixupBatch(NamedTuple):
    inputs: torch.Tensor
    targets: torch.Tensor
    targets_a: torch.Tensor  # the unmixed targets (first partner)
    targets_b: torch.Tensor  # the permuted targets (second partner)


def mixup(inputs: torch.Tensor, targets: torch.Tensor, lam: float, permutation: torch.Tensor) -> MixupBatch:
    """`lam * x + (1 - lam) * x[perm]`, same for targets; also returns both partners' targets because the
    prototype loss compares to each separately: lam * KL(t_a || s) + (1 - lam) * KL(t_b || s) (spec 9)."""
    permutation = permutation.to(inputs.device)
    targets_b = targets[permutation.to(targets.device)]
    mixed_inputs = lam * inputs + (1.0 - lam) * inputs[permutation]
    mixed_targets = lam * targets + (1.0 - lam) * targets_b
    return MixupBatch(mixed_inputs, mixed_targets, targets, targets_b)
