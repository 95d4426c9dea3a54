"""Every file `coreg-edge export` can write, one row each (ultralytics' exporter table): the one place that
knows a format's name, file name, how it is built, which parity checks judge it, and what runs it.

Plain data, torch-free: the device's runtime (`bench DIR`, `info`) reads the file names from here, and the
export pipeline (exporters/export.py) builds and checks every chosen row in table order. A row's `build`
and `measure` name functions as "module:function" (exporters/builders.py), so importing the table costs
nothing. A new format is its builder and one row.

`checks` names a check set (exporters/parity.py CHECK_SETS): "fp32" (logits within 1e-4, the same top-1
on every image), "fp16" (cosine >= 0.999, top-1 >= 99%, accuracy drop <= 0.5 point) or "int8" (cosine >=
0.99, top-1 >= 98%, accuracy drop <= 1 point). `measure` says where parity's logits come from: "native"
(this machine's onnxruntime) or "int8-route" (the int8 target's kernels: this CPU's when they are the
target's, else an emulator's, exporters/int8.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.utils import read_json_object

_BUILD = "coreg_edge.exporters.builders"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    file_name: str
    summary: str  # how the file is made
    runs_on: str  # what can run it
    checks: str  # the parity check set that judges it
    source: str | None = None  # the format it is made from (None: from the PyTorch peer)
    build: str = ""  # "module:function" that writes the file into the staging folder
    measure: str = "native"  # where parity's logits come from: "native" or "int8-route"
    ort_format: bool = False  # an ORT-format file (its metadata is written before conversion)
    # files published beside it (an ORT file's operator list: what a reduced onnxruntime build must include)
    side_files: tuple[str, ...] = ()


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("fp32", "model.onnx", "torch.onnx export of the peer (float32)",
                 "onnxruntime on any CPU or GPU", checks="fp32", build=f"{_BUILD}:build_fp32"),
    ExportFormat("int8", "model.int8.onnx", "static QDQ int8 for --target, calibrated on training images",
                 "onnxruntime on CPUs with the target's int8 kernels (x86 VNNI or AVX2, ARM dot-product)",
                 checks="int8", source="fp32", build=f"{_BUILD}:build_int8", measure="int8-route"),
    ExportFormat("fp16", "model.fp16.onnx", "the peer in float16 (weights and compute), float32 inputs and logits",
                 "onnxruntime CUDA/TensorRT, NPUs and ARM CPUs with fp16 kernels (x86 CPUs run it, slower than fp32)",
                 checks="fp16", build=f"{_BUILD}:build_fp16"),
    ExportFormat("ort", "model.ort", "model.onnx in onnxruntime's ORT format (convert_onnx_models_to_ort)",
                 "onnxruntime mobile and reduced-size builds (Android, iOS, minimal builds)", checks="fp32",
                 source="fp32", build=f"{_BUILD}:build_ort", ort_format=True,
                 side_files=("model.required_operators.config",)),
    ExportFormat("int8-ort", "model.int8.ort", "model.int8.onnx in onnxruntime's ORT format",
                 "onnxruntime mobile and reduced-size builds, on the int8 target's CPUs", checks="int8",
                 source="int8", build=f"{_BUILD}:build_ort", measure="int8-route", ort_format=True,
                 side_files=("model.int8.required_operators.config",)),
)  # fmt: skip

FORMAT_NAMES: tuple[str, ...] = tuple(row.name for row in FORMATS)
FILE_NAMES: tuple[str, ...] = tuple(row.file_name for row in FORMATS)
SIDE_FILES: dict[str, tuple[str, ...]] = {row.file_name: row.side_files for row in FORMATS}
# A file that failed its parity check is kept beside the published ones under this suffix
# (model.int8.onnx.rejected; exporters/staging.py): the runtime warns when one is run.
REJECTED_SUFFIX = ".rejected"
ORT_STYLES = ("fixed", "runtime")  # convert_onnx_models_to_ort's optimisation styles
ORT_PLATFORMS = ("arm", "amd64")  # its target platforms (fixed style only)


def get_format(name: str) -> ExportFormat:
    for row in FORMATS:
        if row.name == name:
            return row
    raise UserError(f"--formats: unknown format {name!r} (known: {', '.join(FORMAT_NAMES)})")


def format_of_file(file_name: str) -> ExportFormat | None:
    """The row whose file this is (by its name inside an export folder), or None."""
    return next((row for row in FORMATS if row.file_name == file_name), None)


def resolve_formats(names: list[str] | tuple[str, ...], int8: bool | None = None) -> tuple[ExportFormat, ...]:
    """The chosen rows in table order: fp32 always (every other file is checked against the same PyTorch
    peer beside it, and most are made from it), each row's source, and int8 added (True) or left out with
    every format made from it (False; None: as `names` say)."""
    chosen = {"fp32", *names, *(["int8"] if int8 else [])}
    if "all" in chosen:
        chosen = set(FORMAT_NAMES)
    for name in list(chosen):
        chosen.update(_sources(get_format(name)))
    if int8 is False:
        chosen = {name for name in chosen if not needs_int8(name)}
    return tuple(row for row in FORMATS if row.name in chosen)


def needs_int8(name: str) -> bool:
    """Whether the format is int8 or made from it (what int8=False leaves out)."""
    return "int8" in {name, *_sources(get_format(name))}


def _sources(row: ExportFormat) -> list[str]:
    """The formats a row is made from, nearest first (int8-ort: int8, fp32)."""
    found = []
    while row.source is not None:
        found.append(row.source)
        row = get_format(row.source)
    return found


def file_passed(parity: Mapping[str, Any], file_name: str) -> bool | None:
    """Whether parity.json says this export's file passed every check (None: it has no checks for it)."""
    block = parity.get("checks")
    checks = block.get(file_name) if isinstance(block, dict) else None
    if not isinstance(checks, dict) or not checks:
        return None
    return all(isinstance(c, dict) and c.get("ok") for c in checks.values()) and not parity.get("problems")


def failed_check(checks: Mapping[str, Any]) -> str | None:
    """The first failed check of one file as "check = value (needs op threshold)"; None when all passed."""
    for check, result in checks.items():
        if isinstance(result, Mapping) and not result.get("ok"):
            value = result.get("value")
            shown = f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"
            threshold = result.get("threshold")
            limit = f"{threshold:g}" if isinstance(threshold, (int, float)) else str(threshold)
            return f"{check} = {shown} (needs {result.get('op')} {limit})"
    return None


def rejection_reason(parity: Mapping[str, Any], file_name: str) -> str | None:
    """Why parity.json says this export's `file_name` failed: its first failed check, or the error that
    stopped it being made or checked; None when parity.json does not say."""
    block = parity.get("checks")
    checks = block.get(file_name) if isinstance(block, Mapping) else None
    failed = failed_check(checks) if isinstance(checks, Mapping) else None
    if failed is not None:
        return failed
    files = parity.get("files")
    entry = files.get(file_name) if isinstance(files, Mapping) else None
    if isinstance(entry, Mapping) and isinstance(entry.get("error"), str):
        return entry["error"]
    problems = parity.get("problems")
    if isinstance(problems, list) and problems and isinstance(checks, Mapping):
        return str(problems[0])  # checks passed, the export as a whole did not (class names, preprocessing)
    return None


def published_name(path: str | os.PathLike[str]) -> str:
    """The name a file had before export set it aside: model.int8.onnx for model.int8.onnx.rejected."""
    name = Path(path).name
    return name[: -len(REJECTED_SUFFIX)] if name.endswith(REJECTED_SUFFIX) else name


def rejected_note(path: str | os.PathLike[str]) -> str | None:
    """One line for a model export set aside because it failed its parity check (NAME.rejected), with
    why when the parity.json beside it says; None for any other file. Running it is allowed (to inspect
    it), never silent: its answers differ from the network's beyond that format's limits."""
    path = Path(path)
    if not path.name.endswith(REJECTED_SUFFIX):
        return None
    why = rejection_reason(read_json_object(path.parent / "parity.json"), published_name(path))
    return (f"{path.name} is a rejected export: it failed its parity check against PyTorch"
            f"{f' ({why})' if why else ' (no parity.json beside it says why)'}; its answers are not the "
            "trained network's. Deploy the file export published instead.")  # fmt: skip


def table() -> str:
    """The formats as the CLI's help shows them."""
    width = max(len(row.name) for row in FORMATS)
    return "\n".join(f"  {row.name:<{width}}  {row.file_name:<16} {row.summary}; runs on {row.runs_on}"
                     for row in FORMATS)  # fmt: skip
