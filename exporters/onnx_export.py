"""A run's network (runs.FinishedRun.network: a peer, or both peers' mean) -> one fp32 ONNX graph: input
`images` (N, C, H, W), output `logits`.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)` by default. On this machine both
exporters matched PyTorch to < 2e-7 on ResNet-18 (docs/ENVIRONMENT.md#export); the TorchScript one takes ~0.3 s
instead of ~3 s and prints nothing. `dynamo=True` selects torch.export-based exporter. Either way the
parity check, not the exporter, is what vouches for the file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from coreg_edge.errors import UserError
from coreg_edge.exporters.errors import ExportError
from coreg_edge.utils import one_line

DEFAULT_OPSET = 17  # onnxruntime >= 1.14 runs it; per-channel QDQ needs >= 13
DYNAMO_MIN_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"


@contextlib.contextmanager
def _quiet_exporter():
    """Keep stdout scriptable: the exporters print progress and warn about deprecations."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def to_onnx(
    module: nn.Module,
    path: str | os.PathLike[str],
    input_shape: tuple[int, int, int],
    *,
    opset: int | None = None,
    dynamo: bool = False,
) -> int:
    """Export `module` (eval mode, CPU) with a dynamic batch axis, run onnx.checker's full check; returns the opset."""
    opset = opset or (DYNAMO_MIN_OPSET if dynamo else DEFAULT_OPSET)
    if opset < 13:
        raise UserError(f"--opset {opset}: use 13 or newer (per-channel int8 and the exporters need it)")
    module = module.eval().cpu()
    example = torch.zeros(2, *input_shape)  # batch 2: a batch of 1 can be specialised away
    try:
        with _quiet_exporter(), torch.no_grad():
            if dynamo:
                program = torch.onnx.export(
                    module,
                    (example,),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                )
                program.save(str(path), external_data=False)
            else:
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types; one line for the user
        first = one_line(exc)
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {first}") from exc
    check_onnx(path)
    return opset


def check_onnx(path: str | os.PathLike[str]) -> None:
    """onnx.checker with full_check (strict shape inference), as a one-line ExportError."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(
            f"{Path(path).name}: onnx.checker rejected the exported graph ({one_line(exc)})"
        ) from exc
