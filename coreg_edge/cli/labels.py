"""`coreg-edge labels`: the pseudo-label of every annotated item, as CSV, JSON Lines or an ImageFolder."""

from __future__ import annotations

import json

import click

from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.logs import info
from coreg_edge.settings.labels import LabelsSettings


@click.command(
    epilog="""\b
Examples:
  coreg-edge labels runs/photos --out labels/                       # labels/labels.csv
  coreg-edge labels runs/photos --format imagefolder --out photos-labelled/
  coreg-edge labels ann.npz --format jsonl --out zero-shot/         # the annotator's own labels
  coreg-edge labels runs/photos --format imagefolder --min-confidence 0.9 --copy --out confident/

\b
From a run folder: the run's network (its selected peer unless --peer) on every annotated item. From an
annotation file: the zero-shot argmax, or the single candidate where the file has no zero-shot
probabilities. ImageFolder links the original files (--copy copies them); they never move.
"""
)
@click.argument("path", type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, help="Folder to write: new or empty (. too), outside the images.")
@settings_options(LabelsSettings)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@common_options
@handle_errors
def labels(path: str, out: str, as_json: bool, device: str, seed: int, quiet: bool, **options) -> None:
    """Write the pseudo-labels of PATH (a run folder or an annotation file) for other trainers."""
    from coreg_edge.labels import export_labels  # lazy: CLI start-up (--help imports every command module)

    summary = export_labels(path, out, LabelsSettings(device=device, **options), quiet=quiet)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    classes = ", ".join(f"{name} {count}" for name, count in summary["per_class"].items())
    info(
        f"wrote {summary['manifest']}: {summary['labelled']} of {summary['items']} items labelled by "
        f"{summary['labelled_by']} ({classes}); {summary['unlabelled']} unlabelled"
    )
