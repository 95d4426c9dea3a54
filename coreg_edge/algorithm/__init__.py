"""Co-Reg as pure tensor functions: no I/O, no devices chosen here, no global state.

The trainer wires these to data loaders, devices and checkpoints. The method is docs/ALGORITHM.md; where the
paper's text and its reference code differ, each function's docstring says which one is the default.
"""

from coreg_edge.utils import lazy_exports

# name -> submodule: imported on first use, so that the torch-free parts (CoRegConfig, the schedule) load
# without torch (the CLI builds its options from the settings, which hold a CoRegConfig).
_EXPORTS: dict[str, str] = {
    "CoRegConfig": ".config",
    "CoRegSchedule": ".schedule",
    "ContrastiveMasks": ".contrastive",
    "ContrastiveQueue": ".queue",
    "LossHistory": ".division",
    "LossWeights": ".schedule",
    "MixupBatch": ".mixup",
    "PredictionTable": ".alignment",
    "PrototypeBank": ".prototypes",
    "align_distribution": ".alignment",
    "cc_loss": ".baselines",
    "co_pseudo_labels_p": ".pseudo_labels",
    "co_pseudo_labels_u": ".pseudo_labels",
    "contrastive_masks": ".contrastive",
    "copy_parameters": ".key_encoder",
    "cosine_lr": ".schedule",
    "detect_collapse": ".diagnostics",
    "divide": ".division",
    "division_losses": ".losses",
    "estimate_prior_from_votes": ".alignment",
    "fit_two_component_gmm": ".division",
    "initial_proden_targets": ".baselines",
    "lambda_u_ramp": ".schedule",
    "masked_supcon_loss": ".contrastive",
    "min_max_normalise": ".division",
    "mixup": ".mixup",
    "momentum_update": ".key_encoder",
    "negative_entropy": ".losses",
    "noisy_supcon_loss": ".contrastive",
    "partial_cross_entropy": ".losses",
    "probability_mse": ".losses",
    "proden_loss": ".baselines",
    "prototype_loss": ".prototypes",
    "restrict_to_candidates": ".pseudo_labels",
    "safe_partition": ".division",
    "sample_mixup_lambda": ".mixup",
    "sample_permutation": ".mixup",
    "self_training_loss": ".losses",
    "sharpen": ".pseudo_labels",
    "soft_cross_entropy": ".losses",
    "total_loss": ".total",
    "update_proden_targets": ".baselines",
    "warmup_loss": ".losses",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
