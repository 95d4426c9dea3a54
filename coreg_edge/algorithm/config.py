"""Every Co-Reg hyperparameter, defaulting to the spec's value (docs/ALGORITHM.md sections 3-6 and 9).

Run length is the user's (docs/ALGORITHM.md#schedule): the config holds no epoch counts.
`resolve(epochs, warmup_epochs)` turns the relative settings (`loss_start`, `ramp_epochs`, `lr_horizon`) into a
concrete `CoRegSchedule`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from coreg_edge.choices import WARMUP_VIEWS

from .schedule import CoRegSchedule

SPEC_LR = 0.01


@dataclass(frozen=True)
class CoRegConfig:
    """Co-Reg hyperparameters. Field names follow the spec; the defaults are the spec's values.

    Schedule fields: `loss_start` (post-warm-up epochs before L_prot and L_cont join) and `ramp_epochs`
    (length of the lambda_u ramp) are `None` by default = scale with the run, as fractions
    `loss_start_fraction` and `ramp_fraction` of the post-warm-up epochs. The fractions default to the
    paper's own ratio on its 100-epoch datasets (50 post-warm-up epochs, start 10, ramp 16: 0.2 and 0.32),
    so a 30-epoch run still uses every loss. The paper's absolute values (10 or 11, and 16) belong in the
    paper recipes; see `CoRegSchedule` for 10 vs 11.
    """

    # Optimisation (spec 6, 9). lr None: the trainer chooses it from the batch size (training/auto.py);
    # the schedule of a config that was never resolved uses the spec's SPEC_LR.
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_lr: float = 1e-5
    lr_horizon: int | None = None  # None: cosine over the run's epochs; 800: the reference code.

    # Warm-up (spec 4, 9).
    warmup_entropy_weight: float = 1.0
    warmup_eps: float = 1e-5
    # Ours: the spec warms up on strong views; on short budgets (tens of epochs, small data) weak views learn
    # several times faster and give the division a trustworthy start (measured on digits: 91% vs 79% test
    # accuracy after 12 warm-up epochs). Paper recipes set "strong".
    warmup_view: str = "weak"

    # Division (spec 5.1, 9).
    distribution_alignment: bool = True
    uniform_prior: bool = True  # False: the annotator's vote shares (estimate_prior_from_votes).
    prior_temperature: float = 1.0
    gmm_history: int = 5
    gmm_max_iter: int = 10
    gmm_tol: float = 1e-2
    gmm_reg_covar: float = 5e-4
    p_threshold: float = 0.5
    # Ours, not the paper's: P never smaller than this share of the items (0 = the paper's plain threshold).
    # The reference code collapsed when a weak warm-up left 11-15% of digits in P; see safe_partition.
    min_p_share: float = 0.25

    # Co-pseudo-labels and self-training (spec 5.2, 5.3).
    sharpen_temperature: float = 0.5
    # Ours: BatchNorm running statistics are updated only by the weak-view passes, not by the MixUp forward
    # of strong views (it still normalises with its own batch statistics). Mixed strong images have other
    # statistics than the clean images a device sees; measured on digits after two Co-Reg epochs, the
    # reference behaviour (False) left a peer at 79.4% test accuracy that recalibrated statistics put at 93.1%.
    mixup_bn_frozen: bool = True
    mixup_alpha: float = 4.0
    lambda_u: float = 1.0  # Final weight of the MSE on U, reached at the end of the ramp.

    # Prototypes (spec 3, 5.4, 9).
    proto_momentum: float = 0.999
    proto_temperature: float = 0.3
    proto_u_weight: float = 1.0  # Constant weight of the U part of L_prot in the reference code.
    proto_weight: float = 0.1

    # Contrastive (spec 3, 5.5, 9).
    contrastive_temperature: float = 0.07
    key_momentum: float = 0.999
    queue_size: int = 8192  # capped at the number of items (a key per item at most; 1,437 on digits)
    proj_dim: int = 128
    proj_hidden: int = 512
    contrastive_weight: float = 0.1

    # Schedule, in post-warm-up epochs (None = scale with the run).
    loss_start: int | None = None
    ramp_epochs: int | None = None
    loss_start_fraction: float = 0.2
    ramp_fraction: float = 0.32

    def __post_init__(self) -> None:
        positive = {
            "lr": SPEC_LR if self.lr is None else self.lr,
            "sharpen_temperature": self.sharpen_temperature,
            "mixup_alpha": self.mixup_alpha,
            "proto_temperature": self.proto_temperature,
            "contrastive_temperature": self.contrastive_temperature,
            "prior_temperature": self.prior_temperature,
            "gmm_tol": self.gmm_tol,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.warmup_view not in WARMUP_VIEWS:
            raise ValueError(f"warmup_view must be weak or strong, got {self.warmup_view!r}")
        for name in ("proto_momentum", "key_momentum", "momentum"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        for name in ("p_threshold", "min_p_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("loss_start_fraction", "ramp_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        for name in ("gmm_history", "gmm_max_iter", "queue_size", "proj_dim", "proj_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr <= (math.inf if self.lr is None else self.lr):  # an unset lr: checked once chosen
            raise ValueError(f"min_lr must be in [0, lr], got {self.min_lr}")
        if self.loss_start is not None and self.loss_start < 0:
            raise ValueError(f"loss_start must be >= 0, got {self.loss_start}")
        if self.ramp_epochs is not None and self.ramp_epochs < 1:
            raise ValueError(f"ramp_epochs must be >= 1, got {self.ramp_epochs}")
        if self.lr_horizon is not None and self.lr_horizon < 1:
            raise ValueError(f"lr_horizon must be >= 1, got {self.lr_horizon}")

    def resolve(self, epochs: int, warmup_epochs: int) -> CoRegSchedule:
        """Concrete schedule for a run of `epochs` in all (0-indexed), the first `warmup_epochs` warm-up.

        Scaled values are at least 1 epoch each; a scaled `loss_start` is also at most
        `post_warmup_epochs - 1`, so the representation losses get at least one epoch whenever there are
        two or more post-warm-up epochs. Explicit values are taken as given.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if not 0 <= warmup_epochs <= epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={epochs}], got {warmup_epochs}")
        post = epochs - warmup_epochs
        if self.loss_start is not None:
            loss_start = self.loss_start
        else:
            loss_start = min(max(1, _round_half_up(self.loss_start_fraction * post)), max(1, post - 1))
        if self.ramp_epochs is not None:
            ramp_epochs = self.ramp_epochs
        else:
            ramp_epochs = max(1, _round_half_up(self.ramp_fraction * post))
        return CoRegSchedule(
            epochs=epochs,
            warmup_epochs=warmup_epochs,
            loss_start=loss_start,
            ramp_epochs=ramp_epochs,
            base_lr=SPEC_LR if self.lr is None else self.lr,
            min_lr=self.min_lr,
            lr_horizon=self.lr_horizon if self.lr_horizon is not None else epochs,
            lambda_u_max=self.lambda_u,
            proto_weight=self.proto_weight,
            contrastive_weight=self.contrastive_weight,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CoRegConfig:
        """Inverse of `to_dict`; unknown keys are an error (a typo must not be silently ignored)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CoRegConfig keys: {', '.join(unknown)}")
        return cls(**values)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))
