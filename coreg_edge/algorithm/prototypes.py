"""Prototypical similarity alignment (spec sections 3, 5.4, 9).

One bank of class prototypes (C x D, starting at zero) shared by both networks; a sample's similarity to
the prototypes is pushed towards its pseudo-label, which ties the projection space to the classifier.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class PrototypeBank:
    """Class prototypes o_c as a plain tensor, with `state_dict` / `load_state_dict` for checkpoints."""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.prototypes = torch.zeros((num_classes, dim), device=device, dtype=dtype)

    @torch.no_grad()
    def update(self, projections: torch.Tensor, labels: torch.Tensor, momentum: float = 0.999) -> None:
        """Reference-code update: for each sample IN ORDER `o_y <- m * o_y + (1 - m) * z`, then L2-normalise
        every prototype once for the batch.

        Vectorised: a class that receives samples z_1..z_k (in order) becomes
        `m^k o + (1 - m) * sum_i m^(k - i) z_i`, the same value as the loop up to float rounding.
        Prototypes still at zero stay zero. Feed it the weak-view projections of P (spec section 9) and
        labels = argmax of their pseudo-labels.
        """
        num_classes = self.prototypes.shape[0]
        z = projections.detach().to(self.prototypes)
        onehot = F.one_hot(labels.to(self.prototypes.device).long(), num_classes).to(self.prototypes)
        # later[i] = samples after i with the same label (how often o_y is decayed after z_i joined it).
        later = (onehot.flip(0).cumsum(0).flip(0) * onehot).sum(dim=1) - 1.0
        weights = (1.0 - momentum) * torch.pow(torch.full_like(later, momentum), later)
        received = onehot.sum(dim=0)
        decay = torch.pow(torch.full_like(received, momentum), received)
        self.prototypes.mul_(decay.unsqueeze(1)).add_((onehot * weights.unsqueeze(1)).t() @ z)
        self.prototypes.copy_(F.normalize(self.prototypes, p=2, dim=1))

    def similarity_logits(self, projections: torch.Tensor, temperature: float = 0.3) -> torch.Tensor:
        """`z . o^T / T`; the bank is a constant here (gradient flows into the projections only)."""
        return projections @ self.prototypes.detach().to(projections.dtype).t() / temperature

    def similarity(self, projections: torch.Tensor, temperature: float = 0.3) -> torch.Tensor:
        """s = softmax(z . o^T / T) (spec 5.4, T = 0.3)."""
        return self.similarity_logits(projections, temperature).softmax(dim=-1)

    def state_dict(self) -> dict[str, Any]:
        return {"prototypes": self.prototypes.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["prototypes"].shape != self.prototypes.shape:
            raise ValueError(
                f"prototypes shape {tuple(state['prototypes'].shape)} != {tuple(self.prototypes.shape)}"
            )
        self.prototypes.copy_(state["prototypes"])

    def to(self, device: torch.device | str) -> PrototypeBank:
        self.prototypes = self.prototypes.to(device)
        return self


def prototype_loss(
    sim_logits_p: torch.Tensor,
    targets_a_p: torch.Tensor,
    targets_b_p: torch.Tensor,
    lam: float,
    sim_logits_u: torch.Tensor,
    targets_a_u: torch.Tensor,
    targets_b_u: torch.Tensor,
    u_weight: float = 1.0,
) -> torch.Tensor:
    """L_prot on the MIXED strong batch, against both MixUp partners' targets (reference code, spec 9):

    P: `lam * KL(t_a || s) + (1 - lam) * KL(t_b || s)` (KL averaged over the batch);
    U: `lam * MSE(s, t_a) + (1 - lam) * MSE(s, t_b)` (mean over batch x classes), times `u_weight` (a constant
    1 in the reference code, not the lambda_u ramp).
    The spec's text (KL(p' || s) on P) is the special case lam = 1 with unmixed inputs. Takes similarity
    logits (`PrototypeBank.similarity_logits`, already divided by T) so the log-softmax stays exact.
    An empty part contributes 0.
    """
    loss = sim_logits_p.sum() * 0.0 + sim_logits_u.sum() * 0.0
    if sim_logits_p.shape[0] > 0:
        log_s = sim_logits_p.log_softmax(dim=-1)
        kl_a = F.kl_div(log_s, targets_a_p, reduction="batchmean")
        kl_b = F.kl_div(log_s, targets_b_p, reduction="batchmean")
        loss = loss + lam * kl_a + (1.0 - lam) * kl_b
    if sim_logits_u.shape[0] > 0:
        s = sim_logits_u.softmax(dim=-1)
        mse = lam * (s - targets_a_u).pow(2).mean() + (1.0 - lam) * (s - targets_b_u).pow(2).mean()
        loss = loss + u_weight * mse
    return loss
