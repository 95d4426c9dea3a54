"""`coreg-edge annotate`: DATA + class names -> candidate-label sets (ann.npz)."""

from __future__ import annotations

import json

import click

from coreg_edge.choices import ANNOTATORS, CANDIDATE_MODES, SIMULATOR_PRESETS
from coreg_edge.cli.common import common_options, echo, handle_errors


@click.command(
    epilog="""\b
Examples:
  coreg-edge annotate photos/ --classes cat,dog,bird --out ann.npz
  coreg-edge annotate cifar10 --download --pretrained openai --out cifar10.npz
  coreg-edge annotate photos/ --classes names.txt --clip-model tiny.json --pretrained tiny.pt --out ann.npz
  coreg-edge annotate digits --annotator synthetic --partial-rate 0.3 --noise-rate 0.2 --out digits.npz
  coreg-edge annotate digits --annotator simulated --preset hard --out hard.npz
  coreg-edge annotate digits --annotator simulated --preset easy --item-noise 0.4 --out noisier.npz
"""
)
@click.argument("data")
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False), help="Annotation file to write (.npz)."
)
@click.option(
    "--classes",
    help="Class names: a,b,c or a text file (one per line). Default: sub-folders / built-in names.",
)
@click.option("--wording", help='How a class name reads in prompts, e.g. "number {}" (default: per dataset).')
@click.option("--annotator", type=click.Choice(ANNOTATORS), default="clip", show_default=True)
@click.option(
    "--clip-model", default="ViT-B-32", show_default=True, help="open_clip model name or model-config JSON."
)
@click.option("--pretrained", default="laion2b_s34b_b79k", show_default=True,
              help="open_clip weight tag (e.g. openai) or a local checkpoint file.")  # fmt: skip
@click.option("--mode", type=click.Choice(CANDIDATE_MODES), default="union-top1", show_default=True,
              help="How template votes become a candidate set.")  # fmt: skip
@click.option(
    "--k", type=int, default=5, show_default=True, help="topk/ratio: how many top classes to consider."
)
@click.option("--ratio", type=float, default=0.5, show_default=True, help="ratio: keep p >= ratio * top p.")
@click.option("--templates", default="default", show_default=True,
              help="default (the paper's 27), imagenet (CLIP's 80), or a text file (one per line, with {}).")  # fmt: skip
@click.option("--partial-rate", type=float, default=0.3, show_default=True, help="synthetic: q.")
@click.option("--noise-rate", type=float, default=0.0, show_default=True, help="synthetic: eta.")
@click.option("--preset", type=click.Choice(SIMULATOR_PRESETS), default="easy", show_default=True,
              help="simulated: the difficulty (easy ~ CLIP on an easy dataset, hard ~ on a hard one); "
              "--shots ... --feature-size each override one of its knobs (unset: the preset's value).")  # fmt: skip
@click.option("--shots", type=int, help="simulated: labelled items per class for the weak classifier.")
@click.option("--sim-templates", type=int, help="simulated: how many templates vote (T).")
@click.option("--template-bias", type=float, help="simulated: scale of each template's class bias.")
@click.option("--item-noise", type=float, help="simulated: scale of each template's per-item noise.")
@click.option("--temperature", type=float, help="simulated: softmax temperature of the zero-shot probs.")
@click.option("--feature-size", type=int, help="simulated: images shrink to N x N grey pixels.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="Image-decoding worker processes.")
@click.option("--strict", is_flag=True, help="Unreadable images are an error instead of skipped and listed.")
@click.option("--max-image-pixels", type=int, default=None,
              help="Images above this many pixels are skipped as unreadable [default: PIL's ~89 million].")  # fmt: skip
@click.option("--download", is_flag=True, help="Download a built-in torchvision dataset if it is not cached.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Cache folder of built-in datasets.")
@click.option("--json", "as_json", is_flag=True, help="Print the annotation statistics as JSON on stdout.")
@common_options
@handle_errors
def annotate(data: str, out: str, as_json: bool, device: str, seed: int, quiet: bool, **options) -> None:
    """Label DATA with candidate-label sets: an image folder or a built-in dataset name.

    DATA is a folder (flat: unlabeled; one sub-folder per class: labels kept for evaluation), or
    digits, digits:test, cifar10[:train|:test], cifar100, svhn, fmnist, eurosat, gtsrb.
    """
    from coreg_edge.annotate import annotate as run_annotate

    annotation = run_annotate(data, out, device=device, seed=seed, quiet=quiet, **options)
    stats = annotation.stats()
    if as_json:
        click.echo(json.dumps({"out": out, **stats}))
        return
    coverage = "n/a" if stats["coverage"] is None else f"{stats['coverage']:.1%}"
    zero_shot = "n/a" if stats["zero_shot_accuracy"] is None else f"{stats['zero_shot_accuracy']:.1%}"
    echo(
        f"wrote {out}: {stats['num_items']} items, {stats['num_classes']} classes, "
        f"mean set size {stats['mean_candidates']:.2f}, coverage {coverage}, zero-shot accuracy {zero_shot}"
        + (f", {stats['skipped_items']} unreadable skipped" if stats["skipped_items"] else ""),
        quiet,
    )
