"""fp32 ONNX -> int8 QDQ ONNX with onnxruntime's tools: `pre_process`, then `quantize` (static, calibrated).

Which settings suit which CPU is the target table's job (`targets.py`); the measurements behind it are in
docs/INT8.md and re-run with `benchmarks/int8_targets.py`.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coreg_edge.choices import ACTIVATION_TYPES, CALIBRATION_METHODS, WEIGHT_TYPES
from coreg_edge.errors import UserError
from coreg_edge.exporters.errors import ExportError
from coreg_edge.utils import one_line


@dataclass(frozen=True)
class QuantSettings:
    """What `--int8` does; the names are the CLI options' (`--activation-type uint8` -> activation_type)."""

    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    calibration_method: str = "minmax"
    reduce_range: bool = False  # 7-bit weights: u8 x s7 pair sums fit in 16 bits (no AVX2 saturation)
    nodes_to_exclude: tuple[str, ...] = ()  # nodes kept in float (the most sensitive ones, when recovering)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("--activation-type", self.activation_type, ACTIVATION_TYPES),
            ("--weight-type", self.weight_type, WEIGHT_TYPES),
            ("--calibration-method", self.calibration_method, CALIBRATION_METHODS),
        ):
            if value not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "QDQ",
            "static": True,
            **asdict(self),
            "nodes_to_exclude": list(self.nodes_to_exclude),
        }

    def describe(self) -> str:
        """One line: "U8S8 per-channel minmax reduce-range, 3 nodes in float"."""
        short = {"uint8": "U8", "int8": "S8"}
        parts = [
            f"{short[self.activation_type]}{short[self.weight_type]}",
            "per-channel" if self.per_channel else "per-tensor",
            self.calibration_method,
        ]
        if self.reduce_range:
            parts.append("reduce-range")
        text = " ".join(parts)
        if self.nodes_to_exclude:
            count = len(self.nodes_to_exclude)
            text += f", {count} node{'s' if count > 1 else ''} in float"
        return text


def pre_process(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """onnxruntime's recommended step before quantizing: symbolic shape inference, graph optimisation
    (e.g. Conv+BN folding), ONNX shape inference, so every tensor has the shape the quantizer needs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's tools raise many types
        raise ExportError(f"onnxruntime's quantization pre-processing failed: {one_line(exc)}") from exc


def quantize(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], reader: Any, settings: QuantSettings
) -> None:
    """Static QDQ quantization of `src` (pre-processed) into `dst`, calibrated on `reader`'s batches."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

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
