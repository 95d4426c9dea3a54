"""`coreg-edge bench`: latency percentiles and throughput of an ONNX model, optionally against another."""

from __future__ import annotations

import json

import click

from coreg_edge.cli.common import common_options, handle_errors, threads_option
from coreg_edge.runtime.bench import DEFAULT_BATCH_SIZES, format_report, run_bench
from coreg_edge.runtime.metadata import parse_size
from coreg_edge.runtime.session import providers_for_device


def _batch_sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(
            f"expected positive integers separated by commas, e.g. 1,8,32 (got {value!r})"
        )
    return tuple(dict.fromkeys(sizes))


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
@click.option(
    "--batch-sizes",
    default=",".join(map(str, DEFAULT_BATCH_SIZES)),
    show_default=True,
    callback=_batch_sizes,
    help="Comma-separated batch sizes to time.",
)
@threads_option
@click.option(
    "--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs per batch size."
)
@click.option(
    "--iters", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per batch size."
)
@click.option(
    "--vs", "vs", type=click.Path(path_type=str), default=None, help="A second ONNX model to compare against."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option(
    "--provider",
    default=None,
    help="onnxruntime execution providers, comma-separated (cpu, cuda, ...); default from --device.",
)
@click.option(
    "--input-size",
    default=None,
    help="N or HxW, for an ONNX whose input size is neither in metadata nor fixed.",
)
@common_options
@handle_errors
def bench(
    model: str,
    batch_sizes: tuple[int, ...],
    threads: int | None,
    warmup: int,
    iters: int,
    vs: str | None,
    as_json: bool,
    provider: str | None,
    input_size: str | None,
    device: str,
    seed: int,
    quiet: bool,
) -> None:
    """Time MODEL.onnx with onnxruntime: p50/p90/p99 latency and images/s per batch size.

    The header names the CPU's int8 instructions (AVX2, AVX512-VNNI, AVX-VNNI, ARM dot-product): int8
    models beat fp32 mainly where these exist. Needs only the device install.
    """
    report = run_bench(
        model,
        batch_sizes=batch_sizes,
        threads=threads,
        warmup=warmup,
        iters=iters,
        vs=vs,
        providers=provider if provider else providers_for_device(device),
        input_size=parse_size(input_size) if input_size else None,
        seed=seed,
        progress=not quiet and not as_json,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
