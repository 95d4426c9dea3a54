"""`coreg-edge annotate`: DATA + class names -> candidate-label sets (ann.npz)."""

from __future__ import annotations

import dataclasses
import json
import warnings

import click

from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.errors import UserError
from coreg_edge.logs import info
from coreg_edge.settings.annotate import AnnotateSettings
from coreg_edge.settings.fields import cli_flag


@click.command(
    epilog="""\b
Examples:
  coreg-edge annotate photos/ --classes cat,dog,bird --out ann.npz
  coreg-edge annotate cifar10 --download --pretrained openai --out cifar10.npz
  coreg-edge annotate photos/ --classes names.txt --clip-model tiny.json --pretrained tiny.pt --out ann.npz
  coreg-edge annotate digits --annotator synthetic --partial-rate 0.3 --noise-rate 0.2 --out digits.npz
  coreg-edge annotate digits --annotator simulated --preset hard --out hard.npz
  coreg-edge annotate digits --annotator simulated --preset easy --item-noise 0.4 --out noisier.npz
  coreg-edge annotate photos/ --classes names.txt --shard 2/4 --out shard-2.npz      (one GPU or machine each)
  coreg-edge annotate --merge shard-1.npz shard-2.npz shard-3.npz shard-4.npz --out ann.npz
  coreg-edge annotate photos/ --classes names.txt --out ann.npz --resume             (after a kill)

\b
While CLIP votes, the finished votes go to OUT.partial/ every 4096 items (or minute); --resume continues a
killed call from there with the same options, and the result equals an uninterrupted run. --shard K/N
splits DATA into N consecutive parts of whole batches (the same --batch-size everywhere); --merge joins the
N shard files, refusing missing, duplicated or mismatched ones, into the file one call would have written.
"""
)
@click.argument("data", nargs=-1)
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False), help="Annotation file to write (.npz)."
)
@settings_options(AnnotateSettings)
@click.option("--resume", is_flag=True, help="Continue a killed annotation of --out from OUT.partial/.")
@click.option("--merge", is_flag=True, help="Join the shard files given as DATA... into --out instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the annotation statistics as JSON on stdout.")
@common_options
@handle_errors
def annotate(data: tuple[str, ...], out: str, resume: bool, merge: bool, as_json: bool, device: str, seed: int,
             quiet: bool, **options) -> None:  # fmt: skip
    """Label DATA with candidate-label sets: an image folder or a built-in dataset name.

    DATA is a folder (flat: unlabeled; one sub-folder per class: labels kept for evaluation), or
    digits, digits:test, cifar10[:train|:test], cifar100, svhn, fmnist, eurosat, gtsrb.
    """
    if merge:
        # lazy: CLI start-up (--help imports every command module)
        from coreg_edge.annotate.shards import merge_into

        _warn_ignored_by_merge(options, device=device, seed=seed, resume=resume)
        annotation = merge_into(data, out)
    else:
        if len(data) != 1:
            raise UserError("give one DATA (a folder or a built-in dataset), or --merge SHARD... to join shard files")
        # lazy: CLI start-up (--help imports every command module)
        from coreg_edge.annotate import annotate as run_annotate

        settings = AnnotateSettings(device=device, seed=seed, **options)
        annotation = run_annotate(data[0], out, settings, quiet=quiet, resume=resume)
    stats = annotation.stats()
    if as_json:
        click.echo(json.dumps({"out": out, **stats}))
        return
    coverage = "n/a" if stats["coverage"] is None else f"{stats['coverage']:.1%}"
    zero_shot = "n/a" if stats["zero_shot_accuracy"] is None else f"{stats['zero_shot_accuracy']:.1%}"
    info(
        f"wrote {out}: {stats['num_items']} items, {stats['num_classes']} classes, "
        f"mean set size {stats['mean_candidates']:.2f}, coverage {coverage}, zero-shot accuracy {zero_shot}"
        + (f", {stats['skipped_items']} unreadable skipped" if stats["skipped_items"] else "")
    )


def _warn_ignored_by_merge(options: dict, **common) -> None:
    """--merge joins the shards as they were made: one warning naming every option it ignores."""
    defaults = {f.name: f.default for f in dataclasses.fields(AnnotateSettings)}
    given = [cli_flag(name) for name, value in options.items() if value != defaults.get(name)]
    given += [f"--{name}" for name, value in common.items() if value not in (defaults.get(name), False)]
    if given:
        warnings.warn(f"--merge joins the shards as they were made; it ignores {', '.join(sorted(given))}",
                      stacklevel=2)  # fmt: skip
