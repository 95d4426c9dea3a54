"""Co-pseudo-labels: each network's targets mix its peer's view of P with its own (spec section 5.2, 9)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sharpen(probs: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """`p ** (1 / T)` renormalised: T < 1 makes targets more confident (spec 5.2, T = 0.5)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    powered = probs.pow(1.0 / temperature)
    return powered / powered.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(powered.dtype).tiny)


def restrict_to_candidates(probs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Zero the classes outside each item's candidate set Y and renormalise over Y.

    Used for the peer's part of a P item's pseudo-label (spec 5.2) and by PRODEN. A row with no mass on Y
    (the reference code would divide by zero there) falls back to uniform over Y: the annotation is the only
    evidence left. Every row of `candidates` must hold at least one class (docs/FORMATS.md#annotation-file).
    """
    mask = candidates.to(probs.dtype)
    restricted = probs * mask
    mass = restricted.sum(dim=-1, keepdim=True)
    uniform = mask / mask.sum(dim=-1, keepdim=True)
    return torch.where(mass > 0, restricted / mass.clamp_min(torch.finfo(probs.dtype).tiny), uniform)


def co_pseudo_labels_p(
    w: torch.Tensor,
    peer_probs_restricted: torch.Tensor,
    own_probs_two_views: Sequence[torch.Tensor],
    temperature: float = 0.5,
) -> torch.Tensor:
    """Targets for P: `sharpen(w * peer + (1 - w) * mean(own views))`.

    `w` (B,) is the peer's clean-probability from the division; `peer_probs_restricted` the peer's aligned
    division-pass prediction restricted to Y (`restrict_to_candidates`), fixed for the epoch; the own part
    is this network's softmax over two weak views, NOT restricted to Y (reference code, spec section 9):
    it lets a confident network move mass out of a wrong candidate set. Call under `torch.no_grad()`.
    """
    own = torch.stack(list(own_probs_two_views)).mean(dim=0)
    weight = w.reshape(-1, 1).to(own.dtype)
    return sharpen(weight * peer_probs_restricted + (1.0 - weight) * own, temperature)


def co_pseudo_labels_u(probs_list: Sequence[torch.Tensor], temperature: float = 0.5) -> torch.Tensor:
    """Targets for U: the mean of both networks' predictions on two weak views each (4 tensors), sharpened.

    The candidate set is ignored for U: its items are treated as unlabeled (spec 5.2).
    """
    if len(probs_list) == 0:
        raise ValueError("probs_list is empty")
    return sharpen(torch.stack(list(probs_list)).mean(dim=0), temperature)
