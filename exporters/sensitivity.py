"""Which nodes lose the most in int8: per-node error through the real int8 kernels, for `nodes_to_exclude`.

onnxruntime's `qdq_loss_debug` compares tensors of the QDQ graph as simulated quantization; the error this
project meets (16-bit saturation inside the AVX2 u8 x s8 kernel) happens inside the fused kernels and is
invisible there. So this reads the quantized activations the fused kernels actually produce (each
QuantizeLinear's output, added as a graph output, which keeps the fusion intact), dequantizes them with
their own scale and zero point, and compares each with the float model's tensor of the same name. A node's
sensitivity is the signal-to-quantization-noise ratio it loses: SQNR(input) - SQNR(output), in dB.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from coreg_edge.exporters.emulation import run_outputs

WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvTranspose")
# Ops the quantizer folds into the producer's QDQ group (Conv -> Relu -> Q): the error owner is upstream.
PASS_THROUGH = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Flatten", "Reshape")

RENAMED_OUTPUT = "_QuantizeLinear_Input"

Runner = Callable[[Path, np.ndarray, list[str]], dict[str, np.ndarray]]


def sqnr(reference: np.ndarray, approximate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when exact)."""
    reference = reference.astype(np.float64)
    noise = float(((reference - approximate.astype(np.float64)) ** 2).sum())
    signal = float((reference**2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def _initializers(graph: Any) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def quantized_activations(int8_model: Any) -> dict[str, tuple[str, float, int, int]]:
    """{float tensor name: (its QuantizeLinear output, scale, zero point, the zero point's onnx element
    type)} for every quantized activation."""
    constants = _initializers(int8_model.graph)
    types = {init.name: init.data_type for init in int8_model.graph.initializer}
    found = {}
    for node in int8_model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants:
            continue
        scale = constants.get(node.input[1])
        zero = constants.get(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8)
        if scale is None or zero is None or scale.size != 1:
            continue
        elem = (
            types.get(node.input[2], onnx.TensorProto.UINT8)
            if len(node.input) > 2
            else onnx.TensorProto.UINT8
        )
        found[node.input[0]] = (node.output[0], float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]), elem)
    return found


def _with_outputs(model: Any, names: dict[str, int], path: Path) -> Path:
    """A copy of `model` with extra graph outputs {tensor name: onnx element type}."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name, elem in names.items():
        if name not in present:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    onnx.save(copy, str(path))
    return path


def host_runner(path: Path, inputs: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """Outputs of `path` on this machine's kernels."""
    return run_outputs(path, inputs, outputs)


def _owner(node: Any, consumers: dict[str, list[Any]], measured: set[str]) -> str | None:
    """The measured tensor a weighted node's error shows up in: its output, or past Relu-like ops."""
    tensor = node.output[0]
    for _ in range(4):
        if tensor in measured:
            return tensor
        nexts = consumers.get(tensor, [])
        if len(nexts) != 1 or nexts[0].op_type not in PASS_THROUGH:
            return None
        tensor = nexts[0].output[0]
    return tensor if tensor in measured else None


def rank_nodes(
    float_model_path: str | os.PathLike[str],
    int8_model_path: str | os.PathLike[str],
    inputs: np.ndarray,
    int8_runner: Runner = host_runner,
) -> list[dict[str, Any]]:
    """Weighted nodes of the float graph, most sensitive first: [{node, op, sqnr_in, sqnr_out, loss_db}].

    `int8_runner` computes the int8 file's outputs (this machine's kernels, or an emulator's: see
    emulation.py); the float model always runs here.
    """
    float_model = onnx.load(str(float_model_path))
    int8_model = onnx.load(str(int8_model_path))
    known = {t for node in float_model.graph.node for t in node.output}
    known |= {i.name for i in float_model.graph.input}
    quantized = {}
    for name, value in quantized_activations(int8_model).items():
        # The quantizer renames a graph output's producer ("logits" -> "logits_QuantizeLinear_Input").
        name = name if name in known else name.removesuffix(RENAMED_OUTPUT)
        if name in known:
            quantized[name] = value
    if not quantized:
        return []
    float_outputs = sorted(quantized)
    with tempfile.TemporaryDirectory(prefix="coreg-edge-sensitivity-") as tmp:
        q_names = {quantized[name][0]: quantized[name][3] for name in float_outputs}
        int8_probe = _with_outputs(int8_model, q_names, Path(tmp) / "int8.onnx")
        float_probe = _with_outputs(
            float_model, {name: onnx.TensorProto.FLOAT for name in float_outputs}, Path(tmp) / "float.onnx"
        )
        float_values = host_runner(float_probe, inputs, float_outputs)
        int8_values = int8_runner(int8_probe, inputs, [quantized[name][0] for name in float_outputs])
    quality = {}
    for name in float_outputs:
        q_name, scale, zero, _ = quantized[name]
        dequantized = (int8_values[q_name].astype(np.float64) - zero) * scale
        quality[name] = sqnr(float_values[name], dequantized)
    consumers: dict[str, list[Any]] = {}
    for node in float_model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    ranked = []
    for node in float_model.graph.node:
        if node.op_type not in WEIGHTED or not node.name:
            continue
        owner = _owner(node, consumers, set(quality))
        if owner is None or node.input[0] not in quality:
            continue
        before, after = quality[node.input[0]], quality[owner]
        loss = (before - after) if math.isfinite(before) else (math.inf if math.isfinite(after) else 0.0)
        ranked.append(
            {"node": node.name, "op": node.op_type, "sqnr_in": before, "sqnr_out": after, "loss_db": loss}
        )
    ranked.sort(key=lambda row: row["loss_db"], reverse=True)
    return ranked
