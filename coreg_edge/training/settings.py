"""Training settings as plain data: every option a keyword with a default, stored in the run's config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from coreg_edge.algorithm import CoRegConfig
from coreg_edge.choices import ON_OFF, STRONG_AUGMENT
from coreg_edge.errors import UserError
from coreg_edge.training.methods import get_method, method_names

METHODS = method_names()  # the registry's (methods.py): coreg first, then the baselines

# The short default that finishes on one CPU machine (docs/ALGORITHM.md#schedule); paper schedules
# (800 epochs, warm-up 50, ...) live in the recipes.
DEFAULT_EPOCHS = 30


@dataclass
class TrainSettings:
    method: str = "coreg"
    backbone: str = "resnet18"
    pretrained_backbone: str | None = None  # "timm" (timm's weights) or a checkpoint file; None: from scratch
    backbone_lr_scale: float | None = None  # backbone lr / head lr; None: 0.1 when pretrained, else 1
    epochs: int = DEFAULT_EPOCHS
    warmup: int | None = None  # None: ends on the held-out hit rate, within bounds (training/auto.py)
    batch_size: int | None = None  # None: chosen from the data size (training/auto.py)
    image_size: int | None = None  # None: the dataset's own (32 for folders)
    channels: int | None = None
    small_stem: bool | None = None
    strong_augment: str = "auto"  # randaugment | cutout | weak; auto: the dataset's rule (spec section 9)
    holdout: float = 0.05  # share of annotated items held out for label-free peer selection
    seed: int = 0
    device: str = "auto"
    compile: str = "auto"  # auto = on for CUDA
    amp: str = "auto"  # auto = bf16 on CUDA when supported
    channels_last: str = "auto"
    workers: int = 0  # threads decoding images into the in-memory cache (0: the main thread)
    eval_data: str | None = None
    val_data: str | None = None
    data: str | None = None  # where the annotated images are now, when they moved
    download: bool = False
    keep_best: bool = True  # keep each peer's best label-free epoch; roll back or stop when it falls sharply
    coreg: CoRegConfig = field(default_factory=CoRegConfig)

    def __post_init__(self) -> None:
        if isinstance(self.coreg, dict):
            try:
                self.coreg = CoRegConfig.from_dict(self.coreg)
            except (ValueError, TypeError) as exc:
                raise UserError(f"algorithm settings: {exc}") from exc
        method = get_method(self.method)  # one line naming the choices for an unknown one
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise UserError("--epochs and --batch-size must be >= 1")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"--image-size must be >= 1 (got {self.image_size})")
        if self.warmup is not None and not 0 <= self.warmup <= self.epochs:
            raise UserError(f"--warmup must be within 0..--epochs ({self.epochs}) (got {self.warmup})")
        if method.co_training and self.resolved_warmup() >= self.epochs:
            raise UserError("Co-Reg needs at least one epoch after warm-up: raise --epochs or lower --warmup")
        if self.backbone_lr_scale is not None and not 0.0 <= self.backbone_lr_scale <= 1.0:
            raise UserError(f"--backbone-lr-scale must be within [0, 1] (got {self.backbone_lr_scale})")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0 (got {self.workers})")
        if not 0.0 <= self.holdout < 0.5:
            raise UserError(f"--holdout must be within [0, 0.5) (got {self.holdout})")
        for name, allowed in (("compile", ON_OFF), ("amp", ON_OFF), ("channels_last", ON_OFF),
                              ("strong_augment", STRONG_AUGMENT)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}")

    def resolved_warmup(self) -> int:
        if not get_method(self.method).co_training:  # only Co-Reg's machinery has a warm-up
            return 0
        if self.warmup is not None:
            return self.warmup
        # Automatic: the most it may last; it usually ends earlier, on a label-free signal (training/auto.py).
        from coreg_edge.training.auto import warmup_bounds

        low, high = warmup_bounds(self.epochs)
        return high if high >= low else self.epochs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["coreg"] = self.coreg.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**data)
