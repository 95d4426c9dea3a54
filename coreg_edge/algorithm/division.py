"""Division of the training set into P (trusted candidate sets) and U (treated as unlabeled), spec 5.1.

Per-item division losses are min-max normalised, averaged over the last few epochs (`LossHistory`), and a
two-component Gaussian mixture gives w = the posterior of the low-loss component; P = {w > 0.5}.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch


def min_max_normalise(values: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1]. A constant vector maps to zeros (the reference code would produce NaN)."""
    low, high = values.min(), values.max()
    span = high - low
    if float(span) <= 0.0:
        return torch.zeros_like(values)
    return (values - low) / span


class LossHistory:
    """The last `history` epochs of per-item division losses, a (history, N) tensor indexed by item id.

    Averaging over epochs (5 in the paper) steadies the GMM fit against one noisy epoch.
    """

    def __init__(self, num_items: int, history: int = 5, device: torch.device | str | None = None) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.values = torch.zeros((history, num_items), dtype=torch.float32, device=device)
        self.count = 0  # epochs pushed so far (the ring holds min(count, history) of them)

    def push(self, losses_by_item: torch.Tensor, normalise: bool = True) -> None:
        """Store one epoch's (N,) losses, min-max normalised first as the reference code does."""
        if losses_by_item.shape != self.values.shape[1:]:
            raise ValueError(f"expected losses of shape {tuple(self.values.shape[1:])}")
        losses = losses_by_item.detach().to(self.values)
        self.values[self.count % self.values.shape[0]] = min_max_normalise(losses) if normalise else losses
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, self.values.shape[0])

    def mean(self) -> torch.Tensor:
        """Per-item mean over the stored epochs (fewer than `history` early on)."""
        if self.count == 0:
            raise ValueError("LossHistory is empty: push a division pass first")
        return self.values[: len(self)].mean(dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.clone(), "count": torch.tensor(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["values"].shape != self.values.shape:
            raise ValueError(f"values shape {tuple(state['values'].shape)} != {tuple(self.values.shape)}")
        self.values.copy_(state["values"])
        self.count = int(state["count"])


def fit_two_component_gmm(
    losses: torch.Tensor, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4, seed: int = 0
) -> torch.Tensor:
    """w_i = posterior of the lower-mean component of a 1-D two-component GMM fitted to the losses.

    Settings are the paper's (max_iter 10, tol 1e-2, reg_covar 5e-4); `seed` makes the k-means
    initialisation deterministic (the reference code is unseeded). With only 10 iterations sklearn often
    reports non-convergence; that warning is silenced here because the cap is deliberate. Losses with no
    spread carry no evidence to split on: every item gets w = 1. Returns float32 on the input's device.
    """
    # lazy: sklearn takes ~1.5 s to import; only this fit needs it (evaluation and baselines import the module)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    values = losses.detach().to("cpu", torch.float64).numpy().reshape(-1, 1)
    if values.shape[0] < 2 or float(np.ptp(values)) <= 0.0:
        return torch.ones(values.shape[0], dtype=torch.float32, device=losses.device)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(values)
    posterior = gmm.predict_proba(values)[:, int(gmm.means_.argmin())]
    return torch.as_tensor(posterior, dtype=torch.float32, device=losses.device)


def divide(w: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """P membership (`in_p`, bool): w strictly above the threshold (spec 5.1)."""
    return w > threshold


def safe_partition(
    w: torch.Tensor, threshold: float = 0.5, min_share: float = 0.0, min_count: int = 0
) -> torch.Tensor:
    """`divide`, but P never smaller than max(ceil(min_share * N), min_count) items (ours, not the paper's).

    The reference code collapsed when the GMM trusted a weak warm-up and put ~11-15% of items in P: an epoch
    ran 3 iterations and both networks fell to one class. If the threshold leaves P too small, P becomes
    the items with the highest w instead (ties: lower item id first). With the defaults it equals `divide`.
    """
    in_p = divide(w, threshold)
    needed = min(max(math.ceil(min_share * w.numel()), min_count), w.numel())
    if int(in_p.sum()) >= needed:
        return in_p
    order = torch.sort(w, descending=True, stable=True).indices[:needed]
    in_p = torch.zeros_like(in_p)
    in_p[order] = True
    return in_p
