"""`coreg-edge bench`: latency percentiles and throughput of an ONNX model, optionally against another."""

from __future__ import annotations

import json

import click

from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.runtime.bench import format_report, run_bench
from coreg_edge.runtime.metadata import parse_size
from coreg_edge.runtime.session import providers_for_device
from coreg_edge.settings.bench import BenchSettings

EPILOG = """\b
Examples:
  coreg-edge bench dist/cifar10/model.int8.onnx
  coreg-edge bench model.onnx --batch-sizes 1,4 --threads 2 --iters 200
  coreg-edge bench model.onnx --vs model.int8.onnx --json > bench.json

\b
With --vs the two models are timed interleaved (alternating iterations) so machine noise hits both;
ratios are vs / model (a p50 ratio below 1 means vs is faster). Input is random normalised data of the
model's own input shape; images/s = batch size / mean latency.
"""


@click.command(epilog=EPILOG)
@click.argument("model", type=click.Path(path_type=str))
@settings_options(BenchSettings)
@click.option(
    "--vs", "vs", type=click.Path(path_type=str), default=None, help="A second ONNX model to compare against."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@common_options
@handle_errors
def bench(model: str, vs: str | None, as_json: bool, device: str, seed: int, quiet: bool, **options) -> None:
    """Time MODEL.onnx with onnxruntime: p50/p90/p99 latency and images/s per batch size.

    The header names the CPU's int8 instructions (AVX2, AVX512-VNNI, AVX-VNNI, ARM dot-product): int8
    models beat fp32 mainly where these exist. Needs only the device install.
    """
    settings = BenchSettings(seed=seed, **options)
    report = run_bench(
        model,
        settings,
        vs=vs,
        providers=settings.provider if settings.provider else providers_for_device(device),
        input_size=parse_size(settings.input_size) if settings.input_size else None,
        progress=not quiet and not as_json,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
