"""`coreg-edge info`: summarise an annotation file, a run folder or an ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from coreg_edge.cli.common import common_options, handle_errors
from coreg_edge.errors import UserError


def describe_path(path: str) -> dict:
    """Dispatch on what PATH is; each kind's describer lives with its format."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file or folder")
    if p.is_file() and p.suffix == ".npz":
        from coreg_edge.annotation_file import describe, load

        return describe(load(p))
    if p.is_dir():
        from coreg_edge.training.run_folder import describe_run

        return describe_run(p)
    if p.is_file() and p.suffix in (".onnx", ".ort"):
        from coreg_edge.exporters.describe import describe_onnx

        return describe_onnx(p)
    raise UserError(
        f"{path}: not something coreg-edge can describe (an annotation .npz, a run folder, or an ONNX or ORT-format model)"
    )


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "n/a"
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


@click.command(
    epilog="""\b
Examples:
  coreg-edge info ann.npz
  coreg-edge info ann.npz --json | jq .coverage
  coreg-edge info dist/digits/model.int8.onnx --json | jq .bytes,.opset
"""
)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@common_options
@handle_errors
def info(path: str, as_json: bool, device: str, seed: int, quiet: bool) -> None:
    """Summarise PATH: an annotation file (.npz), a training run folder, or an exported ONNX model."""
    summary = describe_path(path)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        click.echo(f"{key:<{width}}  {_format_value(value)}")
