"""`coreg-edge export`: a run folder -> parity-checked ONNX fp32 (+ int8 QDQ) and parity.json."""

from __future__ import annotations

import click

from coreg_edge.cli.common import common_options, handle_errors

EPILOG = """\b
Examples:
  coreg-edge export runs/digits --out dist/digits
  coreg-edge export runs/digits --out dist/digits --int8
  coreg-edge export runs/digits --out dist/digits --peer ensemble --opset 18
  coreg-edge export runs/digits --out dist/digits --check-only

\b
Writes DIR/model.onnx (input `images` float32 (N, C, H, W), output `logits`), DIR/model.int8.onnx with
--int8 (static QDQ, calibrated on the run's training images), and DIR/parity.json. Parity runs on the
run's evaluation split (else held-out training images never used to calibrate) through the same runtime
a device uses; a failed check exits non-zero, and no model is left under its final name. Export runs on
the CPU whatever --device says.
"""


@click.command(epilog=EPILOG)
@click.argument("run", type=click.Path(path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str), help="Output folder DIR.")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (static QDQ quantization).")
@click.option(
    "--peer",
    type=click.Choice(["selected", "a", "b", "ensemble"]),
    default=None,
    help="Which network: the run's selected peer [default], a, b, or ensemble (mean of both peers' logits). "
    "With --check-only: the peer model.onnx's metadata names.",
)
@click.option(
    "--opset", type=click.IntRange(min=13), default=None, help="ONNX opset [default: 17; 18 with --dynamo]."
)
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Training images to calibrate int8 ranges on.",
)
@click.option(
    "--activation-type", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True,
    help="int8 activations (uint8 with int8 weights is fast on AVX2 and VNNI CPUs alike).",
)  # fmt: skip
@click.option(
    "--weight-type",
    type=click.Choice(["int8", "uint8"]),
    default="int8",
    show_default=True,
    help="Weight integer type.",
)
@click.option(
    "--per-channel/--no-per-channel",
    default=True,
    show_default=True,
    help="Per-output-channel weight scales.",
)
@click.option(
    "--calibration-method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    default="minmax",
    show_default=True,
    help="How activation ranges are chosen from the calibration images.",
)
@click.option(
    "--parity-images",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Images parity needs at least (the whole evaluation split is always used).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Batch size for parity and calibration.",
)
@click.option(
    "--dynamo", is_flag=True, help="Use torch.onnx's torch.export-based exporter (default: TorchScript)."
)
@click.option("--check-only", is_flag=True, help="Re-run parity on the files already in DIR; export nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print parity.json instead of the table.")
@common_options
@handle_errors
def export(
    run: str,
    out: str,
    int8: bool,
    peer: str | None,
    opset: int | None,
    calibration_images: int,
    activation_type: str,
    weight_type: str,
    per_channel: bool,
    calibration_method: str,
    parity_images: int,
    batch_size: int,
    dynamo: bool,
    check_only: bool,
    as_json: bool,
    device: str,
    seed: int,
    quiet: bool,
) -> None:
    """Export training run RUN to ONNX in DIR (--out), int8 with --int8, and check parity against PyTorch."""
    import json

    from coreg_edge.cli.common import echo
    from coreg_edge.errors import require

    for module in ("torch", "onnx"):
        require(module, "coreg-edge export")
    from coreg_edge.exporters.errors import ParityError
    from coreg_edge.exporters.parity import format_table
    from coreg_edge.exporters.pipeline import check_export, export_run

    def show(report: dict) -> None:
        click.echo(json.dumps(report, indent=2) if as_json else format_table(report))

    try:
        if check_only:
            report = check_export(
                run,
                out,
                peer=peer,
                parity_images=parity_images,
                batch_size=batch_size,
                seed=seed,
                quiet=quiet,
            )
        else:
            report = export_run(
                run,
                out,
                int8=int8,
                peer=peer or "selected",
                opset=opset,
                calibration_images=calibration_images,
                activation_type=activation_type,
                weight_type=weight_type,
                per_channel=per_channel,
                calibration_method=calibration_method,
                parity_images=parity_images,
                batch_size=batch_size,
                dynamo=dynamo,
                seed=seed,
                quiet=quiet,
            )
    except ParityError as exc:
        show(exc.report)
        raise
    show(report)
    if check_only:
        echo(f"checked {', '.join(report['files'])} in {out}; updated parity.json", quiet)
    else:
        echo(f"wrote {', '.join(report['files'])} and parity.json to {out}", quiet)
