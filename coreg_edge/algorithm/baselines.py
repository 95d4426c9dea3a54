"""Partial-label baselines the product compares Co-Reg with: PRODEN and the classifier-consistent loss.

PRODEN (Lv et al., 2020): train with soft targets over Y, start uniform over Y, and after each step replace
them with the model's own prediction restricted to Y. CC (Feng et al., 2020): maximise the probability
mass on Y.
"""

from __future__ import annotations

import torch

from .losses import soft_cross_entropy
from .pseudo_labels import restrict_to_candidates


def cc_loss(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """`-mean_i log sum_{j in Y_i} p_ij`, computed as logsumexp over Y minus logsumexp over all classes.

    The same quantity as the warm-up's partial CE but exact (no eps) and over every item.
    """
    mask = candidates.to(torch.bool)
    in_set = logits.masked_fill(~mask, float("-inf")).logsumexp(dim=-1)
    return (logits.logsumexp(dim=-1) - in_set).mean()


def proden_loss(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """PRODEN's loss: soft cross-entropy against the current targets (zero outside Y)."""
    return soft_cross_entropy(logits, soft_targets)


def initial_proden_targets(candidates: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """PRODEN's starting targets: uniform over each item's candidate set."""
    mask = candidates.to(dtype)
    return mask / mask.sum(dim=-1, keepdim=True)


def update_proden_targets(probs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """New PRODEN targets: the model's probabilities restricted to Y and renormalised (detached)."""
    return restrict_to_candidates(probs.detach(), candidates)
