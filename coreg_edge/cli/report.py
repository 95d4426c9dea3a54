"""`coreg-edge report`: one self-contained HTML page of pictures for a run, an export or a pipeline run."""

from __future__ import annotations

import click

from coreg_edge.cli.common import handle_errors
from coreg_edge.logs import info


@click.command(
    epilog="""\b
Examples:
  coreg-edge report runs/digits                    (a pipeline run: writes runs/digits/report.html)
  coreg-edge report runs/digits/train --out train.html
  coreg-edge report dist/digits --out dist/digits/report.html

\b
Shows both peers' loss, held-out hit rate, test accuracy and share of items in P per epoch; the
candidate-set sizes and coverage; the selected network's confusion matrix and per-class accuracy on the
evaluation split; every exported format's size, accuracy, parity and latency against batch size; the
parity table. Pictures are PNG inside the file: it opens offline and travels as one file. Needs the
report extra (matplotlib): pip install 'coreg-edge[report]'.
"""
)
@click.argument("path", type=click.Path(path_type=str))
@click.option("--out", "-o", default=None, help="The .html file to write [default: PATH/report.html].")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@handle_errors
def report(path: str, out: str | None, quiet: bool) -> None:
    """Write an HTML report of PATH: a training run, an export folder or a pipeline run folder."""
    from coreg_edge.report import write_report  # lazy: CLI start-up (--help imports every command module)

    written = write_report(path, out, quiet=quiet)
    click.echo(str(written))
    info(f"open it in a browser: file://{written.resolve()}")
