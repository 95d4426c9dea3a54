"""Training settings as plain data: every option a keyword with a default, stored in the run's config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from coreg_edge.algorithm.config import CoRegConfig
from coreg_edge.algorithm.schedule import warmup_bounds
from coreg_edge.choices import IMAGE_CACHES, ON_OFF, STRONG_AUGMENT
from coreg_edge.errors import UserError
from coreg_edge.settings.fields import check_fields, device_field, option, resume_keys, seed_field
from coreg_edge.training.methods import get_method, method_names

# The short default that finishes on one CPU machine (docs/ALGORITHM.md#schedule); paper schedules
# (800 epochs, warm-up 50, ...) live in the recipes.
DEFAULT_EPOCHS = 30

METHOD_HELP = (
    "coreg (default): the paper's pair; baselines on the same budget: proden, cc, ce-top1 (cross-entropy on "
    "the annotator's top-1: CLIP's zero-shot argmax, or for synthetic files one candidate drawn per item "
    "with the seed), supervised (true labels; the upper bound)."
)


@dataclass(frozen=True)
class TrainSettings:
    method: str = option("coreg", help=METHOD_HELP, choices=method_names)  # the registry's, live
    backbone: str = option("resnet18", help="Any timm model name.")
    pretrained_backbone: str | None = option(
        help="timm (timm's own weights, via the Hugging Face cache) or a checkpoint FILE (.safetensors, "
        ".pth/.pt/.bin) of the backbone's weights; its head is dropped. The preprocessing follows the "
        "weights' (mean, std, size). Default: from scratch.",
        metavar="TEXT",
    )
    backbone_lr_scale: float | None = option(
        help="Backbone lr / head lr. Default: 0.1 with --pretrained-backbone, else 1.", low=0, high=1
    )
    epochs: int = option(DEFAULT_EPOCHS, help="Training epochs (warm-up included).", low=1, high=100_000)
    warmup: int | None = option(
        help="Warm-up epochs (Co-Reg). Default: until the held-out hit rate flattens, 20-50% of --epochs.",
        low=0,
    )
    batch_size: int | None = option(
        help="Items from P (and from U) per step, per process. Default: chosen from the data size (about 40 "
        "steps per epoch). At least 2: BatchNorm cannot normalise a batch of one image.",
        low=2,
    )
    image_size: int | None = option(
        help="Input size in px. Default: the dataset's (32 for folders); the weights' with "
        "--pretrained-backbone.",
        low=1,
        high=4096,
    )
    channels: int | None = option(help="Input channels: 1 (grey) or 3. Default: the dataset's.", choices=(1, 3))
    small_stem: bool | None = option(
        help="3x3 stride-1 stem for ResNets. Default: on at <= 64 px from scratch; off with "
        "--pretrained-backbone (which keeps the pretrained stem and refuses --small-stem)."
    )
    strong_augment: str = option(
        "auto",
        help="Strong view: auto = the dataset's rule (RandAugment + Cutout; Cutout only for Fashion-MNIST); "
        "weak = the weak view (tiny inputs, where RandAugment + Cutout destroy the content).",
        choices=STRONG_AUGMENT,
    )
    holdout: float = option(0.05, help="Share of annotated items held out for label-free peer selection.",
                            low=0, high=0.5, high_open=True)  # fmt: skip
    seed: int = seed_field()
    device: str = device_field(execution=True)
    compile: str = option("auto", help="torch.compile (auto = on for CUDA; probed, eager fallback).",
                          choices=ON_OFF, execution=True)  # fmt: skip
    # amp changes the numbers (a recipe turning it off re-trains), but a resumed run may drop it: a CPU has
    # no bf16.
    amp: str = option("auto", help="bf16 autocast (auto = on for CUDA with native bf16; otherwise fp32).",
                      choices=ON_OFF, on_resume=True)  # fmt: skip
    channels_last: str = option("auto", help="channels_last memory format (auto = on for CUDA).",
                                choices=ON_OFF, execution=True)  # fmt: skip
    # Threads, as timm's and ultralytics' loaders default to several workers: PIL decodes without the GIL, and
    # a folder of full-size photos decoded on one thread takes hours. The bytes are the same for any count.
    workers: int = option(4, help="Threads decoding images into the cache (0: the main thread only).", low=0,
                          execution=True)  # fmt: skip
    cache: str = option("auto", help="Where the decoded training images wait: memory, or a file on disk read "
                        "batch by batch (bounded memory); auto: memory up to 2 GiB of images.",
                        choices=IMAGE_CACHES, execution=True)  # fmt: skip
    eval_data: str | None = option(
        help="Labelled DATA to report test accuracy on (e.g. digits:test); never used to choose.",
        flag="--eval", recipe="data.eval",
    )  # fmt: skip
    val_data: str | None = option(
        help="Labelled DATA to select the peer by accuracy instead of the label-free score.",
        flag="--val", recipe="data.val",
    )  # fmt: skip
    data: str | None = option(help="Where the annotated images are now, if they moved since annotation.",
                              recipe="data.train", on_resume=True)  # fmt: skip
    download: bool = option(False, help="Download built-in --eval/--val datasets if needed.",
                            recipe="data.download", execution=True)  # fmt: skip
    keep_best: bool = option(
        True,
        help="Keep each peer's best label-free epoch: when its predictions collapse or its held-out hit rate "
        "falls sharply, roll back (halving the lr), stop after the third time, and ship the best epoch's "
        "weights.",
    )
    sync_bn: bool = option(
        False,
        help="Under torchrun on CUDA: SyncBatchNorm (batch statistics over all GPUs). Without it each GPU "
        "normalises its own slice and the running statistics are averaged after every epoch.",
        on_resume=True,  # a run resumed on CPUs (gloo) may drop it
    )
    coreg: CoRegConfig = option(default_factory=CoRegConfig, cli=False, recipe="the [train.coreg] table")

    def __post_init__(self) -> None:
        if isinstance(self.coreg, dict):
            try:
                object.__setattr__(self, "coreg", CoRegConfig.from_dict(self.coreg))
            except (ValueError, TypeError) as exc:
                raise UserError(f"algorithm settings: {exc}") from exc
        check_fields(self)
        if self.warmup is not None and self.warmup > self.epochs:
            raise UserError(f"--warmup must be within 0..--epochs ({self.epochs}) (got {self.warmup})")
        if get_method(self.method).co_training and self.resolved_warmup() >= self.epochs:
            raise UserError("Co-Reg needs at least one epoch after warm-up: raise --epochs or lower --warmup")

    def resolved_warmup(self) -> int:
        if not get_method(self.method).co_training:  # only Co-Reg's machinery has a warm-up
            return 0
        if self.warmup is not None:
            return self.warmup
        # Automatic: the most it may last; it usually ends earlier, on a label-free signal (training/auto.py).
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


#: What `train --resume` takes from the new call: where and how the same run continues (another machine,
#: the images moved), never what it computes.
RESUME_OVERRIDES = resume_keys(TrainSettings)
