"""`coreg-edge bench`: latency percentiles and throughput of an ONNX model, optionally against another, or of
every format in an export folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.errors import UserError
from coreg_edge.runtime.bench import format_report, run_bench
from coreg_edge.runtime.metadata import parse_size
from coreg_edge.runtime.session import providers_for_device
from coreg_edge.settings.bench import BenchSettings

EPILOG = """\b
Examples:
  coreg-edge bench dist/cifar10/model.int8.onnx
  coreg-edge bench model.onnx --batch-sizes 1,4 --threads 2 --iters 200
  coreg-edge bench model.onnx --vs model.int8.onnx --json > bench.json
  coreg-edge bench dist/cifar10/          (every format in the folder, one table)

\b
With --vs the two models are timed interleaved (alternating iterations) so machine noise hits both;
ratios are vs / model (a p50 ratio below 1 means vs is faster). Input is random normalised data of the
model's own input shape; images/s = batch size / mean latency. Given an export folder, every format's file
in it (model.onnx, model.int8.onnx, model.fp16.onnx, model.ort, model.int8.ort) is timed the same way,
all interleaved, with the test accuracy and parity result its parity.json recorded.
"""


@click.command(epilog=EPILOG)
@click.argument("model", type=click.Path(path_type=str))
@settings_options(BenchSettings)
@click.option(
    "--vs", "vs", type=click.Path(path_type=str), default=None, help="A second model (.onnx or .ort) to compare against."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@common_options
@handle_errors
def bench(model: str, vs: str | None, as_json: bool, device: str, seed: int, quiet: bool, **options) -> None:
    """Time MODEL (.onnx or .ort; or every format in an export folder) with onnxruntime: p50/p90/p99
    latency and images/s per batch size.

    The header names the CPU's int8 instructions (AVX2, AVX512-VNNI, AVX-VNNI, ARM dot-product): int8
    models beat fp32 mainly where these exist. Needs only the device install.
    """
    settings = BenchSettings(seed=seed, **options)
    providers = settings.provider if settings.provider else providers_for_device(device)
    if Path(model).is_dir():
        # lazy: CLI start-up (--help imports every command module)
        from coreg_edge.runtime.bench_formats import bench_formats, format_formats

        if vs is not None or settings.input_size:
            raise UserError("--vs and --input-size time single models; an export folder times its own formats")
        folder = bench_formats(model, settings, providers=providers, progress=not quiet and not as_json,
                               caller="cli")  # fmt: skip
        click.echo(json.dumps(folder.to_dict(), indent=2) if as_json else format_formats(folder))
        return
    report = run_bench(
        model,
        settings,
        vs=vs,
        providers=providers,
        input_size=parse_size(settings.input_size, "cli") if settings.input_size else None,
        progress=not quiet and not as_json,
        caller="cli",
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
