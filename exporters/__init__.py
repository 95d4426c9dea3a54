"""Export: a run's peer to every edge format, each checked against PyTorch (installed as coreg_edge.exporters).

One job per module, composable like onnxruntime's own quantization tools:

    export        export_run / check_export: the library functions behind `coreg-edge export`
    builders      how each format's file is made and measured (the `build` functions formats.py names)
    onnx_export   a run's network (runs.FinishedRun.network) -> fp32 ONNX (dynamic batch, full onnx.checker check)
    metadata      write / read the one `coreg_edge` metadata entry (runtime.spec.ModelSpec.to_metadata)
    images        which real images calibrate and which check parity (disjoint), read by index
    calibration   an onnxruntime CalibrationDataReader over the runtime's own preprocessing
    targets       int8 targets: the quantization settings (QuantSettings) per CPU, and the recovery ladder
    quantize      onnxruntime pre-processing, then static QDQ quantization with explicit settings
    int8          int8 for a target CPU: quantize, check on the target's kernels, recover when a check fails
    sensitivity   which nodes lose the most in int8 (nodes kept in float when recovering)
    simulation    onnxruntime's int8 rounding simulated in PyTorch (what the two copies below build on)
    bias_correction  a copy whose biases cancel the mean shift rounding adds (a recovery step)
    qat           a copy fine-tuned under the target's rounding, no labels (the last recovery step, --qat)
    int8_sources  those copies, one row each, exported and pre-processed for quantization
    speed         the kept int8 file's latency against fp32 on this CPU (the trade float nodes make)
    emulation     another CPU's int8 kernels: onnxruntime under qemu user-mode emulation
    parity        PyTorch vs ONNX (through the runtime's Classifier): the checks, parity.json, a table
    staging       outputs written under temporary names, published only when parity passes
    errors        export errors, one line each

Reading a model's header without onnx or torch (`coreg-edge info model.onnx` on a device) is the runtime's:
coreg_edge/runtime/describe.py. Attributes load lazily (torch and onnx only when used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coreg_edge.utils import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover
    from coreg_edge.exporters.errors import ExportError, ParityError
    from coreg_edge.exporters.export import check_export, export_run
    from coreg_edge.exporters.parity import Thresholds, format_table
    from coreg_edge.exporters.targets import QuantSettings

_LAZY = {
    "ExportError": "errors",
    "ParityError": "errors",
    "Thresholds": "parity",
    "format_table": "parity",
    "check_export": "export",
    "export_run": "export",
    "QuantSettings": "targets",
}

__all__ = [
    "ExportError",
    "ParityError",
    "QuantSettings",
    "Thresholds",
    "check_export",
    "export_run",
    "format_table",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
