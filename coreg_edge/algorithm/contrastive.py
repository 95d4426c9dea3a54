"""Noisy supervised contrastive loss (spec section 5.5, with the reference code's sets from section 9).

Contrast set = [B queries, B keys, queue entries]. For anchor i (query i):
- the anchor itself is excluded;
- positives: its own key, plus same-label entries when BOTH anchor and entry are in P;
- ignored (removed from the denominator): for an anchor in P, same-label entries from U; for an anchor in
  U, every same-label entry except its own key; also queue slots not yet filled (ours, see queue.py);
- everything else is a negative.
Loss of an anchor: mean over its positives of -log softmax over the non-ignored entries; the loss is the
mean over all anchors (P and U).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .queue import ContrastiveQueue


class ContrastiveMasks(NamedTuple):
    """(B, M) bool masks over the contrast set; each entry is in exactly one of the three."""

    positive: torch.Tensor
    ignored: torch.Tensor
    negative: torch.Tensor


def contrastive_masks(
    labels: torch.Tensor, in_p: torch.Tensor, valid: torch.Tensor, num_anchors: int
) -> ContrastiveMasks:
    """Masks for a contrast set whose first `num_anchors` entries are the anchors and whose next
    `num_anchors` are their own keys, in the same order; `labels`, `in_p`, `valid` are (M,)."""
    b, m = num_anchors, labels.shape[0]
    if m < 2 * b:
        raise ValueError(f"contrast set of {m} entries cannot hold {b} anchors and their keys")
    device = labels.device
    rows = torch.arange(b, device=device)
    is_self = torch.zeros((b, m), dtype=torch.bool, device=device)
    is_self[rows, rows] = True
    own_key = torch.zeros((b, m), dtype=torch.bool, device=device)
    own_key[rows, rows + b] = True

    in_p = in_p.to(torch.bool)
    same_label = labels[:b, None] == labels[None, :]
    both_in_p = in_p[:b, None] & in_p[None, :]
    removed = is_self | ~valid.to(torch.bool)[None, :]
    positive = ((same_label & both_in_p) | own_key) & ~removed
    ignored = (same_label & ~both_in_p & ~own_key) | removed
    negative = ~(positive | ignored)
    return ContrastiveMasks(positive, ignored, negative)


def masked_supcon_loss(
    anchors: torch.Tensor, contrast: torch.Tensor, masks: ContrastiveMasks, temperature: float = 0.07
) -> torch.Tensor:
    """Mean over anchors of `-mean_{j in pos(i)} [s_ij - logsumexp_{k not ignored} s_ik]`, s = a . c / T.

    Every anchor needs at least one positive (its own key always is one, via `contrastive_masks`); an
    anchor without any would contribute 0. Computed in float32 (AMP-safe).
    """
    logits = anchors.float() @ contrast.float().t() / temperature
    logits = logits.masked_fill(masks.ignored, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positive = masks.positive
    count = positive.sum(dim=1).clamp_min(1)  # no host-side check: it would sync every step
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(pos_log_prob / count).mean()


def noisy_supcon_loss(
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_labels: torch.Tensor,
    query_in_p: torch.Tensor,
    queue: ContrastiveQueue | None = None,
    temperature: float = 0.07,
) -> torch.Tensor:
    """L_ncont for one step. `queries` (B, D): L2-normalised projections of strong view 1 (with gradient);
    `keys` (B, D): the momentum encoder's on strong view 2; `query_labels` (B,): argmax of the pseudo-labels;
    `query_in_p` (B,): P membership. The keys get no gradient; enqueue them AFTER this call.
    """
    b = queries.shape[0]
    device = queries.device
    keys = keys.detach()
    contrast = [queries, keys.to(queries.dtype)]
    labels = [query_labels, query_labels]
    in_p = [query_in_p.to(torch.bool), query_in_p.to(torch.bool)]
    valid = [torch.ones(2 * b, dtype=torch.bool, device=device)]
    if queue is not None:
        contrast.append(queue.keys.to(device=device, dtype=queries.dtype))
        labels.append(queue.labels.to(device))
        in_p.append(queue.in_p.to(device))
        valid.append(queue.valid.to(device))
    masks = contrastive_masks(
        torch.cat([label.to(device).long() for label in labels]),
        torch.cat([flag.to(device) for flag in in_p]),
        torch.cat(valid),
        b,
    )
    return masked_supcon_loss(queries, torch.cat(contrast), masks, temperature)
