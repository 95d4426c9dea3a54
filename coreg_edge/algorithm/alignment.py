"""Distribution alignment for the division pass (spec section 5.1, 9).

A network that favours some classes gives their items low division losses regardless of correctness;
dividing by the network's mean prediction (relative to a prior) removes that bias before the GMM.
"""

from __future__ import annotations

from typing import Any

import torch


def align_distribution(
    probs: torch.Tensor, mean_probs: torch.Tensor, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """`p / (mean_p / prior)`, renormalised per row. `prior=None` is uniform (the paper's default)."""
    num_classes = probs.shape[-1]
    if prior is None:
        prior = torch.full((num_classes,), 1.0 / num_classes, dtype=probs.dtype, device=probs.device)
    ratio = mean_probs.to(probs.dtype) / prior.to(probs.dtype)
    aligned = probs / ratio.clamp_min(torch.finfo(probs.dtype).tiny)
    return aligned / aligned.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


def estimate_prior_from_votes(
    votes: torch.Tensor, num_classes: int, temperature: float = 1.0, floor: float = 1e-6
) -> torch.Tensor:
    """Non-uniform prior: the annotator's per-template top-1 vote shares, `** temperature`, renormalised.

    Reference code's `uniform_prior 0` / `prior_T` (spec section 9); real folders are rarely balanced.
    `votes` is the annotation file's (N, T) class-index table. `floor` (ours) keeps a class nobody voted for
    from getting prior 0, which would make alignment erase it (and its items' division losses infinite).
    """
    if votes.ndim != 2 or votes.shape[1] == 0:
        raise ValueError(
            "estimate_prior_from_votes needs (N, T) votes with T >= 1; synthetic files have none"
        )
    counts = torch.bincount(votes.reshape(-1).long(), minlength=num_classes).to(torch.float64)
    if counts.numel() > num_classes:
        raise ValueError(f"votes hold a class index >= num_classes={num_classes}")
    shares = (counts / counts.sum()).clamp_min(floor).pow(temperature)
    return (shares / shares.sum()).to(torch.float32)


class PredictionTable:
    """Each item's latest softmax output (N x C), starting uniform; its column mean is `mean_p`.

    Reference code (spec section 9): refreshed batch by batch during warm-up and during each division
    pass, and in the division pass a batch is written BEFORE it is aligned with the table's mean
    (`training.coreg.divide_items` does the same, over the training rows only).
    Indexed by item id so it can be all-gathered across ranks. `track(rows)` keeps the column sum over
    `rows` as a float64 running sum, so that the division's per-batch mean costs O(C), not O(N x C).
    """

    def __init__(
        self,
        num_items: int,
        num_classes: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.table = torch.full((num_items, num_classes), 1.0 / num_classes, device=device, dtype=dtype)
        self._tracked: torch.Tensor | None = None  # bool (N,): the rows of the running sum
        self._sum: torch.Tensor | None = None  # float64 (C,)
        self._count = 0

    @torch.no_grad()
    def update(self, item_ids: torch.Tensor, probs: torch.Tensor) -> None:
        """Write each item's latest probabilities (ids unique within a call)."""
        ids = item_ids.to(self.table.device)
        new = probs.detach().to(self.table)
        if self._tracked is not None:
            inside = self._tracked[ids]
            self._sum += (new[inside].double() - self.table[ids[inside]].double()).sum(dim=0)
        self.table[ids] = new

    @torch.no_grad()
    def track(self, rows: torch.Tensor) -> None:
        """From now on keep the column sum over `rows` (summed afresh here: no drift carries over)."""
        tracked = torch.zeros(len(self.table), dtype=torch.bool, device=self.table.device)
        tracked[rows.to(self.table.device)] = True
        self._tracked, self._count = tracked, int(tracked.sum())
        self._sum = self.table[tracked].double().sum(dim=0)

    def tracked_mean(self) -> torch.Tensor:
        """The column mean over the tracked rows (`track`), in the table's dtype."""
        if self._sum is None:
            raise RuntimeError("PredictionTable.tracked_mean() before track(rows)")
        return (self._sum / max(self._count, 1)).to(self.table.dtype)

    def mean(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Column mean over all items, or over `rows` (the training items: held-out rows stay uniform)."""
        return (self.table if rows is None else self.table[rows.to(self.table.device)]).mean(dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"table": self.table.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["table"].shape != self.table.shape:
            raise ValueError(f"table shape {tuple(state['table'].shape)} != {tuple(self.table.shape)}")
        self.table.copy_(state["table"])
        self._tracked, self._sum, self._count = None, None, 0  # track() again before tracked_mean()
