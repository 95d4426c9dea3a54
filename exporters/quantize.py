"""fp32 ONNX -> int8 QDQ ONNX with onnxruntime's tools: `pre_process`, then `quantize` (static, calibrated).

Defaults: U8 activations, S8 weights, per-channel, MinMax. Measured 2026-11-24 on the development machine
(AMD EPYC, 2 shared cores, /proc/cpuinfo has avx2 AND avx512_vnni; onnxruntime 1.32; ResNet-18 with the
small-input stem at 32 px trained 3 epochs on digits (82.5% test); 256 digits:train calibration images;
parity on the 360 digits:test images; ratios are int8 / fp32 p50 latency, timed interleaved, 2 threads;
`python benchmarks/export_bench.py --grid-only --backbones resnet18 --epochs 3`):

    activations / weights  per-channel  size   b1 latency  b32 latency  cosine   top-1 agree  acc drop
    U8 / S8                yes          0.253  0.259       0.354        0.99939  98.3%        0.28 pt
    U8 / S8                no           0.251  0.263       0.339        0.99962  98.3%        0.56 pt
    S8 / S8                yes          0.253  0.700       0.790        0.99939  98.3%        0.28 pt
    S8 / S8                no           0.251  0.679       0.794        0.99963  98.3%        0.56 pt

So even WITH VNNI, onnxruntime's S8S8 QDQ path is ~2.3x slower than U8S8 here (and public reports show it
gives no speed-up at all on AVX2 without VNNI), while U8S8 is ~2.8x faster than fp32 at batch 32. U8S8 is
the default; per-channel weight scales cost nothing measurable in size or speed and are the safer choice
for accuracy (weights of different output channels span very different ranges; here the drop was 1 vs 2
of 360 images, within noise), so they are on. MinMax is the fastest calibration and is exact on the ranges a confident model sees;
entropy / percentile stay available for models with outlier activations. Caveat: on AVX2 CPUs WITHOUT
VNNI, onnxruntime's U8S8 kernel (vpmaddubsw) can saturate int16 sums; parity would catch the accuracy loss
there, and `--activation-type int8` is the fallback. (The machine was shared during the measurement, load
~3 on 2 cores; the ratios come from interleaved timing, the S8S8 / U8S8 gap is far larger than the noise.
Re-measured idle with `benchmarks/export_bench.py`: the default U8S8 per-channel file at 0.253x fp32, batch 32
at 0.27x and batch 1 at 0.38x fp32 latency, -0.28 points of accuracy.)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.exporters.errors import ExportError

ACTIVATION_TYPES = ("uint8", "int8")
WEIGHT_TYPES = ("int8", "uint8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantSettings:
    """What `--int8` does; the names are the CLI options' (`--activation-type uint8` -> activation_type)."""

    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    calibration_method: str = "minmax"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("--activation-type", self.activation_type, ACTIVATION_TYPES),
            ("--weight-type", self.weight_type, WEIGHT_TYPES),
            ("--calibration-method", self.calibration_method, CALIBRATION_METHODS),
        ):
            if value not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")

    def to_dict(self) -> dict[str, Any]:
        return {"format": "QDQ", "static": True, **asdict(self)}


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def pre_process(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """onnxruntime's recommended step before quantizing: symbolic shape inference, graph optimisation
    (e.g. Conv+BN folding), ONNX shape inference, so every tensor has the shape the quantizer needs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's tools raise many types
        raise ExportError(f"onnxruntime's quantization pre-processing failed: {_one_line(exc)}") from exc


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
    try:
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            activation_type=types[settings.activation_type],
            weight_type=types[settings.weight_type],
            calibrate_method=methods[settings.calibration_method],
        )
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime static quantization failed: {_one_line(exc)}") from exc
    if not Path(dst).exists():
        raise ExportError("onnxruntime static quantization wrote no model")
