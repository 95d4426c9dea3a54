"""How each export format's file is made and measured: the `build` functions coreg_edge/formats.py names.

A builder gets the export's context (the PyTorch peer, the staging folder, the fp32 logits and preprocessed
inputs parity measured) and writes its file into the staging folder, with the logits parity judges it by.
`finalize` then writes each published file's own metadata (its format, its measured test accuracy).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from coreg_edge.exporters import calibration as calibration_step  # tests replace its ArrayCalibrationReader
from coreg_edge.exporters import int8_sources
from coreg_edge.exporters.errors import ExportError
from coreg_edge.exporters.images import ImagePlan
from coreg_edge.exporters.int8 import choose_route, quantize_for_target, route_outputs
from coreg_edge.exporters.metadata import set_metadata
from coreg_edge.exporters.onnx_export import check_onnx, to_onnx
from coreg_edge.exporters.parity import Logits, Thresholds, collect_logits
from coreg_edge.exporters.quantize import QuantSettings, pre_process
from coreg_edge.exporters.speed import int8_speed, speed_note
from coreg_edge.exporters.staging import Staging
from coreg_edge.formats import ExportFormat, get_format
from coreg_edge.logs import info
from coreg_edge.runtime.classifier import Classifier
from coreg_edge.runtime.session import load_model
from coreg_edge.runtime.spec import ModelSpec
from coreg_edge.settings.export import ExportSettings
from coreg_edge.utils import atomic_path, one_line


@dataclass
class ExportContext:
    """What every builder may read, and what the fp32 and int8 builders leave for the others."""

    stage: Staging
    module: Any  # the PyTorch peer (eval, CPU)
    input_shape: tuple[int, int, int]
    spec: ModelSpec  # class names, preprocessing, provenance: every file's metadata
    settings: ExportSettings
    plan: ImagePlan
    limits: Thresholds
    target: Any  # the Int8Target
    quant: Any  # its QuantSettings with the explicit overrides (None without int8)
    keep_inputs: bool  # other formats follow fp32: keep the preprocessed parity inputs
    quiet: bool = False
    run_config: dict[str, Any] = field(default_factory=dict)  # the run's config.json (QAT's budget)
    measured: Logits | None = None  # set by build_fp32
    fp32: Classifier | None = None
    opset: int | None = None
    route: Any = None  # the int8 Route (set by build_int8)
    built: dict[str, Built] = field(default_factory=dict)  # by format name

    def metadata(self, row: ExportFormat, **info: Any) -> dict[str, Any]:
        """The `coreg_edge` metadata of this row's file: the spec, what the build adds, the format's name."""
        return self.spec.with_info(**info, format=row.name).to_metadata()

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    def path(self, row: ExportFormat) -> Path:
        return self.stage.path(row.file_name)


@dataclass
class Built:
    """One format's file in the staging folder, with what parity and parity.json need about it."""

    logits: np.ndarray | None = None  # None: not made (see error)
    metadata: dict[str, Any] = field(default_factory=dict)  # this file's own metadata keys
    info: dict[str, Any] = field(default_factory=dict)  # parity.json's files[NAME] keys (how it was made)
    header: dict[str, Any] = field(default_factory=dict)  # parity.json's top-level keys (int8's blocks)
    error: str | None = None  # why it could not be made


def open_classifier(path: Path, batch_size: int) -> Classifier:
    """The device's Classifier, with idle onnxruntime threads not spinning: parity alternates PyTorch and
    onnxruntime batch by batch, and spinning workers of one would steal the cores of the other."""
    return Classifier.from_loaded(load_model(path, spinning=False), batch_size=batch_size)


def native_logits(path: Path, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """`path`'s logits on the preprocessed parity inputs, through the device's runtime on this machine."""
    classifier = open_classifier(path, batch_size)
    width = len(classifier.class_names)
    parts = [classifier.logits(np.ascontiguousarray(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)


def measure_file(row: ExportFormat, path: Path, inputs: np.ndarray, batch_size: int, route: Any = None) -> np.ndarray:
    """Parity's logits of a file, where its row says they come from: this machine's runtime, or the int8
    target's kernels (`route`: this CPU's when they are the target's, else an emulator's)."""
    if row.measure == "int8-route":
        return route_outputs(route, path, inputs, ["logits"])["logits"]
    return native_logits(path, inputs, batch_size)


def measure(ctx: ExportContext, row: ExportFormat, path: Path) -> np.ndarray:
    assert ctx.measured is not None and ctx.measured.inputs is not None
    return measure_file(row, path, ctx.measured.inputs, ctx.batch_size, ctx.route)


def build_fp32(ctx: ExportContext, row: ExportFormat) -> Built:
    """torch.onnx export of the peer; parity's reference logits and inputs are measured here."""
    path = ctx.path(row)
    ctx.opset = to_onnx(ctx.module, path, ctx.input_shape, opset=ctx.settings.opset, dynamo=ctx.settings.dynamo)
    set_metadata(path, ctx.metadata(row))
    ctx.fp32 = open_classifier(path, ctx.batch_size)
    keep = ctx.stage.path("parity-inputs.npy") if ctx.keep_inputs else None
    ctx.measured = collect_logits(
        ctx.module, {row.file_name: ctx.fp32}, ctx.plan.parity, batch_size=ctx.batch_size, quiet=ctx.quiet,
        keep_inputs=keep,
    )  # fmt: skip
    return Built(logits=ctx.measured.onnx[row.file_name])


def half_peer(module: Any) -> Any:
    """The peer in float16 between float32 inputs and logits: a device feeds it the fp32 file's tensors."""
    class HalfPeer(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = copy.deepcopy(inner).half().eval()

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner(images.half()).float()

    return HalfPeer(module)


def build_fp16(ctx: ExportContext, row: ExportFormat) -> Built:
    """The peer exported in float16 (weights and compute; float32 inputs and outputs)."""
    path = ctx.path(row)
    to_onnx(half_peer(ctx.module), path, ctx.input_shape, opset=ctx.opset, dynamo=ctx.settings.dynamo)
    set_metadata(path, ctx.metadata(row))
    return Built(logits=measure(ctx, row, path), info={"weights": "float16", "io": "float32"})


def build_int8(ctx: ExportContext, row: ExportFormat) -> Built:
    """Static QDQ int8 for the target: calibrate once, quantize, recover when a check fails (int8.py)."""
    assert ctx.fp32 is not None and ctx.measured is not None
    target, s = ctx.target, ctx.settings
    if ctx.plan.calibration is None:
        return _int8_error(target, "no calibration images")
    store = ctx.stage.path("calibration-inputs.npy")
    route = ctx.route = choose_route(target, emulate=s.emulate)
    fp32_file = get_format("fp32").file_name

    def metadata(used: QuantSettings) -> dict[str, Any]:
        return {"quantization": quantization_metadata(target, used, route)}

    try:
        images = calibration_step.preprocess_calibration(ctx.fp32, ctx.plan.calibration, store, ctx.batch_size, ctx.quiet)
        used_count = images.count

        def reader(used: QuantSettings) -> calibration_step.ArrayCalibrationReader:
            single = used.calibration_method != "minmax"
            return calibration_step.ArrayCalibrationReader(images.array, ctx.fp32.loaded.input_name, ctx.batch_size, single)

        def finish(path: Path, used: QuantSettings) -> None:
            set_metadata(path, ctx.spec.with_info(format=row.name, **metadata(used)).to_metadata())
            check_onnx(path)

        pre_process(ctx.stage.path(fp32_file), ctx.stage.path("model.pre.onnx"))
        qat_mode = s.qat if s.fine_tunes else "off"  # auto QAT is a recovery step
        try:
            outcome = quantize_for_target(
                ctx.stage.path("model.pre.onnx"), ctx.stage.folder, settings=ctx.quant, route=route,
                reference=ctx.measured.reference, inputs=ctx.measured.inputs, labels=ctx.measured.check_labels,
                limits=ctx.limits, reader=reader, finish=finish, recover=s.recover, qat=qat_mode,
                prepare=lambda used: int8_sources.prepare_source(ctx, images.array, used),
                log=(lambda _: None) if ctx.quiet else info,
            )  # fmt: skip
        finally:
            images.array = None  # close the memory map before the staging folder goes
    except ExportError as exc:  # int8 could not be made at all: fp32 still stands on its own checks
        return _int8_error(target, str(exc))
    shipped = outcome.settings
    speed = int8_speed(ctx.stage.path(row.file_name), ctx.stage.path(fp32_file), route)
    note = speed_note(speed, len(shipped.nodes_to_exclude) if shipped is not None else 0)
    if note is not None and outcome.shipped is not None:
        warnings.warn(note, UserWarning, stacklevel=2)
    calibration = {
        **ctx.plan.calibration.describe(),
        "used": used_count,
        "skipped": images.skipped,
        "disjoint_from_parity": ctx.plan.disjoint,
    }
    return Built(
        logits=outcome.logits,
        metadata=metadata(shipped) if shipped is not None else {},
        header={
            "calibration": calibration,
            "quantization": None if shipped is None else {**shipped.to_dict(), "target": target.name},
            "int8": {"target": target.to_dict(), **outcome.to_dict(), "speed": speed},
        },
    )


def _int8_error(target: Any, why: str) -> Built:
    return Built(error=why, header={"int8": {"target": target.to_dict(), "error": why}})


def quantization_metadata(target: Any, settings: Any, route: Any) -> dict[str, Any]:
    """What the int8 file says about itself: the CPU family it was made for and how it was checked."""
    return {
        "target": target.name,
        "settings": settings.describe(),
        "checked_with": route.kernels,
        "faithful": route.faithful,
    }


def ort_conversion(settings: ExportSettings) -> dict[str, Any]:
    """How the ORT-format files are made (parity.json and each file's metadata say so)."""
    return {
        "tool": "onnxruntime.tools.convert_onnx_models_to_ort",
        "onnxruntime": onnxruntime.__version__,
        "optimization_style": settings.ort_style,
        "target_platform": settings.ort_platform if settings.ort_style == "fixed" else None,
    }


def convert_to_ort(source: Path, out: Path, settings: ExportSettings) -> None:
    """onnxruntime's own converter, into `out`. The tool names its outputs after `source`, so the operator
    list lands beside `out` as SOURCE_STEM.required_operators.config (model.onnx -> model.*)."""
    # lazy: the ORT converter (flatbuffers and its tools) only for the ORT formats
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    style = {"fixed": OptimizationStyle.Fixed, "runtime": OptimizationStyle.Runtime}[settings.ort_style]
    with tempfile.TemporaryDirectory(prefix="coreg-edge-ort-", dir=out.parent) as tmp:
        try:
            with _quiet_tool():
                convert_onnx_models_to_ort(
                    source, output_dir=Path(tmp) / "out", optimization_styles=[style],
                    target_platform=settings.ort_platform,
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the tool raises many kinds; one line for the user
            raise ExportError(f"{out.name}: convert_onnx_models_to_ort failed ({one_line(exc)})") from exc
        made = sorted((Path(tmp) / "out").rglob("*.ort"))
        if not made:
            raise ExportError(f"{out.name}: convert_onnx_models_to_ort wrote no .ort file")
        shutil.move(str(made[0]), out)
        for config in (Path(tmp) / "out").rglob("*.required_operators.config"):  # for a reduced build
            text = config.read_text(encoding="utf-8").replace(str(made[0]), out.name)  # not the staging path
            with atomic_path(out.parent / config.name) as tmp_config:
                Path(tmp_config).write_text(text, encoding="utf-8")


class _quiet_tool:
    """The converter logs to stdout and stderr: keep stdout scriptable, show nothing unless it fails."""

    def __enter__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        logging.disable(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        logging.disable(logging.NOTSET)
        self._stack.close()


def build_ort(ctx: ExportContext, row: ExportFormat) -> Built:
    """The source format's file in ORT format; its metadata is the source's, with this format's name."""
    assert row.source is not None
    source = ctx.built.get(row.source)
    if source is None or source.logits is None:
        return Built(error=f"{row.name}: its source {row.source} was not made")
    path = ctx.path(row)
    metadata = {**source.metadata, "ort": ort_conversion(ctx.settings)}
    _write_ort(ctx, row, ctx.metadata(row, **metadata))
    return Built(logits=measure(ctx, row, path), metadata=metadata, info={"ort": metadata["ort"]})


def _write_ort(ctx: ExportContext, row: ExportFormat, meta: dict[str, Any]) -> None:
    """Convert a copy of the source file that carries `meta`: the ORT file keeps the metadata it had."""
    source = ctx.stage.path(get_format(row.source or "fp32").file_name)
    with tempfile.TemporaryDirectory(prefix="coreg-edge-meta-", dir=ctx.stage.folder) as tmp:
        copy_path = Path(tmp) / source.name
        shutil.copyfile(source, copy_path)
        set_metadata(copy_path, meta)
        convert_to_ort(copy_path, ctx.path(row), ctx.settings)


def finalize(ctx: ExportContext, row: ExportFormat, built: Built, test_accuracy: float | None) -> None:
    """A published file's final metadata: its format and its own measured test accuracy (the device reads
    it); an ORT file is converted again from its source with that metadata, and measured again: it must
    give the very logits parity checked."""
    meta = ctx.metadata(row, **built.metadata, test_accuracy=test_accuracy)
    if not row.ort_format:
        set_metadata(ctx.path(row), meta)
        return
    _write_ort(ctx, row, meta)
    if not np.array_equal(measure(ctx, row, ctx.path(row)), built.logits):  # never publish an unchecked graph
        raise ExportError(f"{row.file_name}: converting again with its metadata changed its logits; not published")
