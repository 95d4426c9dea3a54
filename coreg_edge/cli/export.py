"""`coreg-edge export`: a run folder -> parity-checked ONNX fp32 (+ int8 QDQ) and parity.json."""

from __future__ import annotations

import click

from coreg_edge.choices import ACTIVATION_TYPES, CALIBRATION_METHODS, EXPORT_PEERS, WEIGHT_TYPES
from coreg_edge.cli.common import common_options, handle_errors
from coreg_edge.exporters.targets import TARGET_NAMES, table

EPILOG = """\b
Examples:
  coreg-edge export runs/digits --out dist/digits
  coreg-edge export runs/digits --out dist/digits --int8
  coreg-edge export runs/digits --out dist/digits --peer ensemble --opset 18
  coreg-edge export runs/digits --out dist/digits --check-only
  coreg-edge export runs/digits --out dist/pi --int8 --target arm64

\b
Writes DIR/model.onnx (input `images` float32 (N, C, H, W), output `logits`), DIR/model.int8.onnx with
--int8 (static QDQ, calibrated on the run's training images), and DIR/parity.json. Parity runs on the
run's evaluation split (else held-out training images never used to calibrate) through the same runtime
a device uses. A file whose check fails is left as NAME.rejected and the export exits 1; the files that
passed are published, and an earlier export's good file is never deleted by a failed one (a complete
export leaves exactly its own files: fp32 only after an int8 export removes the old model.int8.onnx).
Export runs on the CPU whatever --device says.

\b
int8 targets (--target; auto = this CPU's row):
__TABLE__

\b
A parity check proves the kernels of the machine that runs it: for another target it uses an emulator
when one is installed (x86-avx2: qemu-user-static), else this CPU's kernels, and parity.json and the
output say so. When the target's settings fail, the recovery steps are tried in order (7-bit weights,
U8U8, percentile calibration, the most sensitive nodes kept in float); parity.json records each attempt.
"""


@click.command(epilog=EPILOG.replace("__TABLE__", table()))
@click.argument("run", type=click.Path(path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str), help="Output folder DIR.")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (static QDQ quantization).")
@click.option(
    "--peer",
    type=click.Choice(EXPORT_PEERS),
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
    "--target",
    type=click.Choice(TARGET_NAMES),
    default="auto",
    show_default=True,
    help="The CPU the int8 file is for (its settings; see the table below). auto: this machine's CPU.",
)
@click.option(
    "--recover/--no-recover",
    default=True,
    show_default=True,
    help="When the target's int8 settings fail parity, try the recovery steps and ship the first that "
    "passes (--no-recover: fail at once).",
)
@click.option(
    "--emulate/--no-emulate",
    default=True,
    show_default=True,
    help="Check a target this CPU cannot run with an emulator when one is installed "
    "(x86-avx2 on any x86-64: qemu-user-static).",
)
@click.option(
    "--activation-type", type=click.Choice(ACTIVATION_TYPES), default=None,
    help="Override the target's activation type.",
)  # fmt: skip
@click.option(
    "--weight-type",
    type=click.Choice(WEIGHT_TYPES),
    default=None,
    help="Override the target's weight type.",
)
@click.option(
    "--per-channel/--no-per-channel",
    default=None,
    help="Override the target's per-output-channel weight scales.",
)
@click.option("--reduce-range/--no-reduce-range", default=None, help="Override the target's 7-bit weights.")
@click.option(
    "--calibration-method",
    type=click.Choice(CALIBRATION_METHODS),
    default=None,
    help="Override the target's calibration (how activation ranges are chosen).",
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
    "--data",
    default=None,
    help="Where the run's training images are now, when they moved since training (calibration and "
    "held-out parity images).",
)
@click.option(
    "--eval-data", default=None, help="Where the run's evaluation images (parity) are now, when they moved."
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
    target: str,
    recover: bool,
    emulate: bool,
    activation_type: str | None,
    weight_type: str | None,
    per_channel: bool | None,
    reduce_range: bool | None,
    calibration_method: str | None,
    parity_images: int,
    batch_size: int,
    dynamo: bool,
    data: str | None,
    eval_data: str | None,
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
                emulate=emulate,
                parity_images=parity_images,
                batch_size=batch_size,
                data=data,
                eval_data=eval_data,
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
                target=target,
                recover=recover,
                emulate=emulate,
                activation_type=activation_type,
                weight_type=weight_type,
                per_channel=per_channel,
                reduce_range=reduce_range,
                calibration_method=calibration_method,
                parity_images=parity_images,
                batch_size=batch_size,
                dynamo=dynamo,
                data=data,
                eval_data=eval_data,
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
