"""Annotation settings: what `annotate()`, `coreg-edge annotate` and a recipe's [annotate] table take."""

from __future__ import annotations

import re
from dataclasses import dataclass

from coreg_edge.annotate.registry import annotator_names
from coreg_edge.choices import CANDIDATE_MODES, SIMULATOR_PRESETS
from coreg_edge.settings.fields import SettingError, check_fields, device_field, option, seed_field

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")  # --shard K/N

@dataclass(frozen=True)
class AnnotateSettings:
    """How DATA becomes candidate-label sets. Fields of the other annotators are ignored by each one."""

    classes: str | list[str] | dict[str, list[str]] | None = option(
        help="Class names: a,b,c, a text file (one per line), or a .toml/.json file giving each class one name "
        'or several (cat = ["cat", "kitten"]: each is prompted, votes go to the class). Default: '
        "sub-folders / built-in names.",
        recipe="classes.names",
    )
    wording: str | None = option(
        help='How a class name reads in prompts, e.g. "number {}" (default: per dataset).',
        recipe="classes.wording",
    )
    annotator: str = option("clip", help="Who labels: CLIP, the synthetic protocol, or the CLIP simulator "
                            "(the registry's annotators: annotate/registry.py).", choices=annotator_names)  # fmt: skip
    clip_model: str = option(DEFAULT_CLIP_MODEL, help="clip: open_clip model name or model-config JSON.")
    pretrained: str | None = option(
        DEFAULT_PRETRAINED, help="clip: open_clip weight tag (e.g. openai) or a local checkpoint file."
    )
    mode: str = option("union-top1", help="clip: how template votes become a candidate set.",
                       choices=CANDIDATE_MODES)  # fmt: skip
    k: int = option(5, help="topk/ratio: how many top classes to consider.", low=1)
    ratio: float = option(0.5, help="ratio: keep p >= ratio * top p.", low=0, high=1, low_open=True)
    templates: str = option(
        "default",
        help="clip: default (the paper's 27), imagenet (CLIP's 80), a text file (one per line, with {}), or "
        "none (only --examples vote).",
        recipe_type="templates",
    )
    examples: str | None = option(
        help="A folder with one sub-folder per class holding a few example images: each class's mean example "
        "votes too, beside the templates (clip: CLIP image embeddings; simulated: its pixels). Keep it outside "
        "DATA: examples are never training items.",
        metavar="DIRECTORY", fingerprint_if_set=True,
    )
    partial_rate: float = option(0.3, help="synthetic: q, the chance of each wrong class.", low=0, high=1)
    noise_rate: float = option(0.0, help="synthetic: eta, the chance the true class is left out.", low=0, high=1)
    preset: str = option(
        "easy",
        help="simulated: the difficulty (easy ~ CLIP on an easy dataset, hard ~ on a hard one); "
        "--shots ... --feature-size each override one of its knobs (unset: the preset's value).",
        choices=SIMULATOR_PRESETS,
    )
    shots: int | None = option(help="simulated: labelled items per class for the weak classifier.", low=1)
    sim_templates: int | None = option(help="simulated: how many templates vote (T).", low=1)
    template_bias: float | None = option(help="simulated: scale of each template's class bias.", low=0)
    item_noise: float | None = option(help="simulated: scale of each template's per-item noise.", low=0)
    temperature: float | None = option(help="simulated: softmax temperature of the zero-shot probs.", low=0,
                                       low_open=True)  # fmt: skip
    feature_size: int | None = option(help="simulated: images shrink to N x N grey pixels.", low=1, high=256)
    reject: float | None = option(
        help="None of these: an item whose best zero-shot probability is below P is left out (listed in the "
        "file as rejected, never trained on) instead of getting a candidate set; for the folder's images of "
        "none of the classes.",
        low=0, high=1, high_open=True, metavar="P", fingerprint_if_set=True,
    )  # fmt: skip
    seed: int = seed_field()
    device: str = device_field(execution=True)
    shard: str | None = option(
        help="K/N: annotate only the K-th of N equal parts of DATA (one GPU or machine each) into a shard file; "
        "auto: this rank's under torchrun (--out 'ann-{shard}.npz' names each rank's file). Join them with "
        "coreg-edge annotate --merge SHARD... --out ann.npz.", recipe=False, metavar="K/N|auto",
    )
    batch_size: int = option(128, help="Images per forward pass.", low=1, execution=True)
    workers: int = option(0, help="Image-decoding worker processes.", low=0, execution=True)
    strict: bool = option(False, help="Unreadable images are an error instead of skipped and listed.",
                          execution=True)  # fmt: skip
    max_image_pixels: int | None = option(
        help="Images above this many pixels are skipped as unreadable [default: PIL's ~89 million].", low=1
    )
    download: bool = option(False, help="Download a built-in torchvision dataset if it is not cached.",
                            execution=True, recipe="data.download")  # fmt: skip
    data_dir: str | None = option(help="Cache folder of built-in datasets.", execution=True,
                                  recipe="data.data_dir", metavar="DIRECTORY")  # fmt: skip
    channels: int | None = option(cli=False, recipe="train.channels", choices=(1, 3))

    def __post_init__(self) -> None:
        check_fields(self)
        if self.shard is not None and self.shard.strip() != "auto":
            match = SHARD_PATTERN.match(self.shard)
            if not match:
                raise SettingError("shard", f"{self.shard}: give K/N, e.g. 2/4 for the second of four parts, or auto")
            index, count = int(match.group(1)), int(match.group(2))
            if count < 1 or not 1 <= index <= count:
                raise SettingError("shard", f"{self.shard}: K must be between 1 and N (got {index}/{count})")

