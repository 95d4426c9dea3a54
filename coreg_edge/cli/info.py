"""`coreg-edge info`: summarise an annotation file, a run folder or an ONNX model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from coreg_edge.cli.common import common_options, handle_errors
from coreg_edge.errors import UserError
from coreg_edge.formats import FORMATS, REJECTED_SUFFIX, file_passed, published_name, rejected_note
from coreg_edge.utils import read_json_object

WHAT_INFO_READS = (
    "an annotation .npz, a training run folder, an export folder, a pipeline run folder, or an ONNX or "
    "ORT-format model"
)


def describe_path(path: str) -> dict:
    """Dispatch on what PATH is; each kind's describer lives with its format."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file or folder")
    if p.is_file() and p.suffix == ".npz":
        # lazy: CLI start-up (--help imports every command module)
        from coreg_edge.annotation_file import describe, load

        return describe(load(p))
    if p.is_dir():
        return describe_folder(p)
    if p.is_file() and Path(published_name(p)).suffix in (".onnx", ".ort"):
        from coreg_edge.runtime.describe import describe_onnx  # lazy: CLI start-up

        summary = describe_onnx(p)
        note = rejected_note(p)
        return {**summary, "rejected": note} if note else summary
    raise UserError(f"{path}: not something coreg-edge can describe ({WHAT_INFO_READS})")


def describe_folder(folder: Path) -> dict[str, Any]:
    """A training run, a pipeline run or an export folder, each described as what it is (never advice to
    train a folder that is something else)."""
    from coreg_edge.report.sources import is_export  # lazy: CLI start-up (the report package)

    if (folder / "config.json").is_file():
        # lazy: CLI start-up, and the training layer is torch-side (info runs on a device)
        from coreg_edge.training.run_folder import describe_run

        return describe_run(folder)
    if (folder / "stages.json").is_file() or (folder / "summary.json").is_file():
        return describe_pipeline(folder)
    if is_export(folder):
        return describe_export(folder)
    raise UserError(f"{folder}: a folder, but not one coreg-edge made (info reads {WHAT_INFO_READS})")


def describe_pipeline(folder: Path) -> dict[str, Any]:
    """`coreg-edge run`'s folder: each stage's status, where its parts are, the deployable model (while its
    file is there) and what to run next."""
    summary = read_json_object(folder / "summary.json")
    stages = summary.get("stages") if isinstance(summary.get("stages"), dict) else None
    if stages is None:
        stages = read_json_object(folder / "stages.json").get("stages") or {}
    status = {name: (info.get("status") or "done") if isinstance(info, dict) else None for name, info in stages.items()}
    deployable = summary.get("deployable")
    parts = {name: str(folder / name) for name in ("annotation.npz", "train", "export", "bench.json", "report.html")
             if (folder / name).exists()}  # fmt: skip
    return {
        "kind": "pipeline run",
        "path": str(folder),
        "stages": status,
        **parts,
        "deployable": str(folder / deployable) if isinstance(deployable, str) and (folder / deployable).is_file() else None,
        "next": "; ".join(command for command, part in ((f"coreg-edge info {folder / 'train'}", "train"),
                                                         (f"coreg-edge bench {folder / 'export'}", "export"),
                                                         (f"coreg-edge report {folder}", "train"))
                          if part in parts) or f"coreg-edge run RECIPE --out {folder} (continues it)",
    }


def describe_export(folder: Path) -> dict[str, Any]:
    """An export folder: each model file's format, size and parity result (parity.json), the rejected ones,
    the run it came from."""
    parity = read_json_object(folder / "parity.json")
    files: dict[str, Any] = {}
    for row in FORMATS:
        for name in (row.file_name, row.file_name + REJECTED_SUFFIX):
            if (folder / name).is_file():
                passed = False if name.endswith(REJECTED_SUFFIX) else file_passed(parity, row.file_name)
                files[name] = {"format": row.name, "bytes": (folder / name).stat().st_size,
                               "parity": {True: "ok", False: "failed", None: "unknown"}[passed]}  # fmt: skip
    return {
        "kind": "export folder",
        "path": str(folder),
        "files": files,
        "parity_json": (folder / "parity.json").is_file(),
        "parity_ok": parity.get("ok") if parity else None,
        "reason": parity.get("reason") if parity else None,
        "run": parity.get("run") if parity else None,
        "next": f"coreg-edge info {folder / 'MODEL'}; coreg-edge bench {folder}; coreg-edge report {folder}",
    }


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "n/a"
    if isinstance(value, (list, dict)):
        if not value:
            return "none"
        text = json.dumps(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


@click.command(
    epilog="""\b
Examples:
  coreg-edge info ann.npz
  coreg-edge info ann.npz --json | jq .coverage
  coreg-edge info dist/digits/model.int8.onnx --json | jq .bytes,.opset
  coreg-edge info dist/digits          (an export folder: each file's format, size and parity)
  coreg-edge info runs/digits          (a pipeline run: its stages and deployable model)
"""
)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@common_options
@handle_errors
def info(path: str, as_json: bool, device: str, seed: int, quiet: bool) -> None:
    """Summarise PATH: an annotation file (.npz), a training run, an export folder, a pipeline run, or an
    exported ONNX or ORT-format model."""
    summary = describe_path(path)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        click.echo(f"{key:<{width}}  {_format_value(value)}")
