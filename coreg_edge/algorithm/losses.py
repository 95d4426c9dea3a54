"""Co-Reg's classification losses: warm-up, division, self-training (spec sections 4, 5.1, 5.3, 9)."""

from __future__ import annotations

import torch


def partial_cross_entropy(
    logits: torch.Tensor, candidates: torch.Tensor, eps: float = 1e-5, skip_full_sets: bool = True
) -> torch.Tensor:
    """`-log(sum_{j in Y} p_j + eps)`, averaged over the items that count.

    Reference code (spec section 9): `eps = 1e-5` inside the log, and items whose set is all C classes are
    skipped (their loss is identically ~0 and would only dilute the mean); 0 when no item counts.
    """
    probs = logits.softmax(dim=-1)
    mask = candidates.to(probs.dtype)
    per_item = -torch.log((probs * mask).sum(dim=-1) + eps)
    if not skip_full_sets:
        return per_item.mean()
    counted = (mask.sum(dim=-1) < logits.shape[-1]).to(per_item.dtype)
    # masked mean without a host sync (a per-step `.any()` would stall CUDA and break compiled graphs)
    return (per_item * counted).sum() / counted.sum().clamp_min(1.0)


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """`mean_i sum_j p_ij log p_ij`: minimising it keeps warm-up predictions from becoming over-confident."""
    log_probs = logits.log_softmax(dim=-1)
    return (log_probs.exp() * log_probs).sum(dim=-1).mean()


def warmup_loss(
    logits: torch.Tensor, candidates: torch.Tensor, entropy_weight: float = 1.0, eps: float = 1e-5
) -> torch.Tensor:
    """L_warm = partial CE + entropy_weight * sum_j p_j log p_j (spec section 4; weight 1 in the paper)."""
    return partial_cross_entropy(logits, candidates, eps=eps) + entropy_weight * negative_entropy(logits)


def division_losses(probs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Per-item `-log max_{j in Y} p_j` on aligned division-pass probabilities (spec 5.1); shape (N,).

    Low for items whose set holds a confidently predicted class. Clamped at the dtype's smallest positive
    value so a zero probability gives a large finite loss, not inf (ours; inf would turn min-max into NaN).
    """
    best = (probs * candidates.to(probs.dtype)).amax(dim=-1)
    return -best.clamp_min(torch.finfo(probs.dtype).tiny).log()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`-mean_i sum_j t_ij log softmax(logits)_ij`; 0 for an empty batch."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def probability_mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`mean((softmax(logits) - targets) ** 2)` over batch x classes (spec section 9); 0 for an empty batch."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return (logits.softmax(dim=-1) - targets).pow(2).mean()


def self_training_loss(
    logits_p: torch.Tensor,
    targets_p: torch.Tensor,
    logits_u: torch.Tensor,
    targets_u: torch.Tensor,
    lambda_u: float,
) -> torch.Tensor:
    """L_cr = soft CE on the mixed P part + lambda_u * MSE on the mixed U part (spec 5.3).

    The MSE on U is bounded, so wrong pseudo-labels on U hurt less than under a cross-entropy. An empty U
    part (every item in P) contributes 0 (ours; the reference code would give NaN).
    """
    return soft_cross_entropy(logits_p, targets_p) + lambda_u * probability_mse(logits_u, targets_u)
