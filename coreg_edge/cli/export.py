"""`coreg-edge export`: a run folder -> parity-checked files in every chosen format, and parity.json."""

from __future__ import annotations

import json

import click
from click.core import ParameterSource

from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.errors import require
from coreg_edge.exporters.targets import table
from coreg_edge.formats import table as formats_table
from coreg_edge.logs import info
from coreg_edge.settings.export import ExportSettings

EPILOG = """\b
Examples:
  coreg-edge export runs/digits --out dist/digits
  coreg-edge export runs/digits --out dist/digits --int8
  coreg-edge export runs/digits --out dist/digits --formats all
  coreg-edge export runs/digits --out dist/phone --formats int8,int8-ort --target arm64
  coreg-edge export runs/digits --out dist/digits --peer ensemble --opset 18
  coreg-edge export runs/digits --out dist/digits --check-only
  coreg-edge export runs/digits --out dist/pi --int8 --target arm64

\b
Writes DIR/model.onnx (input `images` float32 (N, C, H, W), output `logits`), each other format's file
(--formats; --int8 is --formats fp32,int8), and DIR/parity.json. Parity runs on the run's evaluation
split (else held-out training images never used to calibrate) through the same runtime a device uses,
each file judged by its own format's checks. A file whose check fails is left as NAME.rejected and the export exits 1; the files that
passed are published, and an earlier export's good file is never deleted by a failed one (a complete
export leaves exactly its own files: fp32 only after an int8 export removes the old model.int8.onnx).
Export and parity run on the CPU; --device is where quantization-aware fine-tuning runs (--qat).

\b
formats (--formats):
__FORMATS__

\b
int8 targets (--target; auto = this CPU's row):
__TABLE__

\b
A parity check proves the kernels of the machine that runs it: for another target it uses an emulator
when one is installed (x86-avx2: qemu-user-static), else this CPU's kernels, and parity.json and the
output say so. When the target's settings fail, the recovery steps are tried in order (7-bit weights,
U8U8, percentile calibration, a bias-corrected copy, the most sensitive nodes kept in float), then quantization-aware
fine-tuning (--qat auto: when nothing passed, or what passed keeps nodes in float; a fine-tuned file
that passes ships instead). parity.json records each attempt.
"""


@click.command(epilog=EPILOG.replace("__TABLE__", table()).replace("__FORMATS__", formats_table()))
@click.argument("run", type=click.Path(path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str), help="Output folder DIR.")
@settings_options(ExportSettings)
@click.option("--check-only", is_flag=True, help="Re-run parity on the files already in DIR; export nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print parity.json instead of the table.")
@common_options
@handle_errors
def export(run: str, out: str, check_only: bool, as_json: bool, device: str, seed: int, quiet: bool,
           **options) -> None:  # fmt: skip
    """Export training run RUN to DIR (--out) in every format asked (--formats; fp32 ONNX always), and check
    each file's parity against PyTorch."""
    for module in ("torch", "onnx"):
        require(module, "coreg-edge export")
    # lazy: CLI start-up (torch, onnx), and only after the require() checks above name a missing extra
    from coreg_edge.exporters.errors import ParityError
    from coreg_edge.exporters.export import check_export, export_run
    from coreg_edge.exporters.parity import format_table

    def show(report: dict) -> None:
        click.echo(json.dumps(report, indent=2) if as_json else format_table(report))

    settings = ExportSettings(seed=seed, device=device, **options)
    try:
        if check_only:  # the peer the file's metadata names, unless one is typed
            typed = click.get_current_context().get_parameter_source("peer") == ParameterSource.COMMANDLINE
            report = check_export(run, out, settings, peer=settings.peer if typed else None, quiet=quiet)
        else:
            report = export_run(run, out, settings, quiet=quiet)
    except ParityError as exc:
        show(exc.report)
        raise
    show(report)
    if check_only:
        info(f"checked {', '.join(report['files'])} in {out}; updated parity.json")
    else:
        info(f"wrote {', '.join(report['files'])} and parity.json to {out}")
