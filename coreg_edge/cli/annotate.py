"""`coreg-edge annotate`: DATA + class names -> candidate-label sets (ann.npz)."""

from __future__ import annotations

import json

import click

from coreg_edge.cli.common import common_options, echo, handle_errors, settings_options
from coreg_edge.settings.annotate import AnnotateSettings


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
@settings_options(AnnotateSettings)
@click.option("--json", "as_json", is_flag=True, help="Print the annotation statistics as JSON on stdout.")
@common_options
@handle_errors
def annotate(data: str, out: str, as_json: bool, device: str, seed: int, quiet: bool, **options) -> None:
    """Label DATA with candidate-label sets: an image folder or a built-in dataset name.

    DATA is a folder (flat: unlabeled; one sub-folder per class: labels kept for evaluation), or
    digits, digits:test, cifar10[:train|:test], cifar100, svhn, fmnist, eurosat, gtsrb.
    """
    from coreg_edge.annotate import annotate as run_annotate

    settings = AnnotateSettings(device=device, seed=seed, **options)
    annotation = run_annotate(data, out, settings, quiet=quiet)
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
