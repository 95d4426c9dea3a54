"""Export: ONNX fp32 and int8 QDQ, parity checks (installed as coreg_edge.exporters).

One job per module, composable like onnxruntime's own quantization tools:

    onnx_export   PyTorch peer(s) -> fp32 ONNX (dynamic batch, full onnx.checker check)
    metadata      write / read the one `coreg_edge` metadata entry (the runtime's make_metadata)
    images        which real images calibrate and which check parity (disjoint), read by index
    calibration   an onnxruntime CalibrationDataReader over the runtime's own preprocessing
    quantize      onnxruntime pre-processing, then static QDQ quantization with explicit settings
    parity        PyTorch vs ONNX (through the runtime's Classifier): the checks, parity.json, a table
    staging       outputs written under temporary names, published only when parity passes
    pipeline      export_run / check_export: the library functions behind `coreg-edge export`
    describe      `coreg-edge info model.onnx` (no onnx, torch or onnxruntime import: device-safe)

Attributes load lazily so `coreg_edge.exporters.describe` works on a device install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coreg_edge.utils import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover
    from coreg_edge.exporters.describe import describe_onnx
    from coreg_edge.exporters.errors import ExportError, ParityError
    from coreg_edge.exporters.parity import Thresholds, format_table
    from coreg_edge.exporters.pipeline import check_export, export_run
    from coreg_edge.exporters.quantize import QuantSettings

_LAZY = {
    "describe_onnx": "describe",
    "ExportError": "errors",
    "ParityError": "errors",
    "Thresholds": "parity",
    "format_table": "parity",
    "check_export": "pipeline",
    "export_run": "pipeline",
    "QuantSettings": "quantize",
}

__all__ = [
    "ExportError",
    "ParityError",
    "QuantSettings",
    "Thresholds",
    "check_export",
    "describe_onnx",
    "export_run",
    "format_table",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
