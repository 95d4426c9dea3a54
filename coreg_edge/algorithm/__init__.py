"""Co-Reg as pure tensor functions: no I/O, no devices chosen here, no global state.

The trainer wires these to data loaders, devices and checkpoints. The method is docs/ALGORITHM.md; where the
paper's text and its reference code differ, each function's docstring says which one is the default.
"""

from .alignment import PredictionTable, align_distribution, estimate_prior_from_votes
from .baselines import cc_loss, initial_proden_targets, proden_loss, update_proden_targets
from .config import CoRegConfig
from .contrastive import ContrastiveMasks, contrastive_masks, masked_supcon_loss, noisy_supcon_loss
from .diagnostics import detect_collapse
from .division import LossHistory, divide, fit_two_component_gmm, min_max_normalise, safe_partition
from .key_encoder import copy_parameters, momentum_update
from .losses import (
    division_losses,
    negative_entropy,
    partial_cross_entropy,
    probability_mse,
    self_training_loss,
    soft_cross_entropy,
    warmup_loss,
)
from .mixup import MixupBatch, mixup, sample_mixup_lambda, sample_permutation
from .prototypes import PrototypeBank, prototype_loss
from .pseudo_labels import co_pseudo_labels_p, co_pseudo_labels_u, restrict_to_candidates, sharpen
from .queue import ContrastiveQueue
from .schedule import CoRegSchedule, LossWeights, cosine_lr, lambda_u_ramp
from .total import total_loss

__all__ = [
    "CoRegConfig",
    "CoRegSchedule",
    "ContrastiveMasks",
    "ContrastiveQueue",
    "LossHistory",
    "LossWeights",
    "MixupBatch",
    "PredictionTable",
    "PrototypeBank",
    "align_distribution",
    "cc_loss",
    "co_pseudo_labels_p",
    "co_pseudo_labels_u",
    "contrastive_masks",
    "copy_parameters",
    "cosine_lr",
    "detect_collapse",
    "divide",
    "division_losses",
    "estimate_prior_from_votes",
    "fit_two_component_gmm",
    "initial_proden_targets",
    "lambda_u_ramp",
    "masked_supcon_loss",
    "min_max_normalise",
    "mixup",
    "momentum_update",
    "negative_entropy",
    "noisy_supcon_loss",
    "partial_cross_entropy",
    "probability_mse",
    "proden_loss",
    "prototype_loss",
    "restrict_to_candidates",
    "safe_partition",
    "sample_mixup_lambda",
    "sample_permutation",
    "self_training_loss",
    "sharpen",
    "soft_cross_entropy",
    "total_loss",
    "update_proden_targets",
    "warmup_loss",
]
