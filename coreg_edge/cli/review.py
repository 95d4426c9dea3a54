"""`coreg-edge review`: a stratified sample of a run's labels to check by eye, then use as `--val`."""

from __future__ import annotations

import json

import click

from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.logs import info
from coreg_edge.settings.labels import ReviewSettings


@click.command(
    epilog="""\b
Examples:
  coreg-edge review runs/photos --out photos-review/
  coreg-edge review runs/photos --sample 500 --out photos-review/
  # open photos-review/index.html, move wrongly labelled images into their right class folder, then:
  coreg-edge train ann.npz --val photos-review/ --out runs/photos-checked

\b
With --val the peer is chosen by accuracy on the corrected sample, and the run reports that accuracy.
The sample is drawn from the training items, the least confident first: accuracy on it is a pessimistic,
biased check of the labels, not an unbiased held-out estimate of accuracy on new images.
"""
)
@click.argument("run", type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, help="Folder to write: new or empty (. too), outside the images.")
@settings_options(ReviewSettings)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@common_options
@handle_errors
def review(run: str, out: str, as_json: bool, device: str, seed: int, quiet: bool, **options) -> None:
    """Write a review folder for RUN: a sample of its training items (the least confident first), one
    sub-folder per predicted class and a self-contained index.html."""
    from coreg_edge.review import write_review  # lazy: CLI start-up (--help imports every command module)

    summary = write_review(run, out, ReviewSettings(device=device, **options), quiet=quiet)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    info(f"wrote {summary['items']} items to {out} (open {summary['page']}); move wrong ones into their right "
         f"class folder, then train with --val {out}")  # fmt: skip
