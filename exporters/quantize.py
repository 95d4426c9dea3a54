"""fp32 ONNX -> int8 QDQ ONNX with onnxruntime's tools: `pre_process`, then `quantize` (static, calibrated).

Which settings suit which CPU is the target table's job (`targets.py`); the measurements behind it are in
docs/INT8.md and re-run with `benchmarks/int8_targets.py`.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from coreg_edge.exporters.errors import ExportError
from coreg_edge.exporters.targets import QuantSettings
from coreg_edge.utils import one_line


def pre_process(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """onnxruntime's recommended step before quantizing: symbolic shape inference, graph optimisation
    (e.g. Conv+BN folding), ONNX shape inference, so every tensor has the shape the quantizer needs."""
    try:
        quant_pre_process(str(src), str(dst))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's tools raise many types
        raise ExportError(f"onnxruntime's quantization pre-processing failed: {one_line(exc)}") from exc


def quantize(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], reader: Any, settings: QuantSettings
) -> None:
    """Static QDQ quantization of `src` (pre-processed) into `dst`, calibrated on `reader`'s batches."""
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    try:  # onnxruntime's histogram calibrators print() their bins: keep stdout for the user's JSON
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(src),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                activation_type=types[settings.activation_type],
                weight_type=types[settings.weight_type],
                calibrate_method=methods[settings.calibration_method],
                reduce_range=settings.reduce_range,
                nodes_to_exclude=list(settings.nodes_to_exclude) or None,
            )
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime static quantization failed: {one_line(exc)}") from exc
    if not Path(dst).exists():
        raise ExportError("onnxruntime static quantization wrote no model")
