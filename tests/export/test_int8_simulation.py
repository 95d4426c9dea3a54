"""exporters/simulation.py: onnxruntime's static int8 rounding, simulated in PyTorch, checked against
onnxruntime itself (its own range rules, its quantized weights, its int8 logits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType
from torch import nn

from coreg_edge.exporters.calibration import ArrayCalibrationReader
from coreg_edge.exporters.quantize import pre_process, quantize
from coreg_edge.exporters.sensitivity import host_runner
from coreg_edge.exporters.simulation import (
    Simulation,
    activation_grid,
    folded_producers,
    scale_zero_point,
    weight_grid,
)
from coreg_edge.exporters.targets import QuantSettings

SETTINGS = [
    QuantSettings(),
    QuantSettings(reduce_range=True),
    QuantSettings(weight_type="uint8"),
    QuantSettings(activation_type="int8"),
]
ONNX_TYPES = {"uint8": onnx.TensorProto.UINT8, "int8": onnx.TensorProto.INT8}


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.describe())
def test_the_grids_are_onnxruntimes(settings):
    weights = weight_grid(settings)
    assert (weights.qmin, weights.qmax) == tuple(
        int(v) for v in get_qmin_qmax_for_qType(ONNX_TYPES[settings.weight_type], settings.reduce_range, symmetric=True)
    )
    activations = activation_grid(settings)
    assert (activations.qmin, activations.qmax) == tuple(
        int(v) for v in get_qmin_qmax_for_qType(ONNX_TYPES[settings.activation_type], symmetric=False)
    )


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.describe())
@pytest.mark.parametrize("rmin, rmax", [(-1.5, 3.0), (0.2, 0.7), (-0.3, -0.1), (0.0, 0.0), (-2.0, 2.0)])
def test_scale_and_zero_point_are_onnxruntimes(settings, rmin, rmax):
    for grid in (weight_grid(settings), activation_grid(settings)):
        zero, scale = compute_scale_zp(
            np.array(rmin, np.float32), np.array(rmax, np.float32), np.array(grid.qmin), np.array(grid.qmax),
            symmetric=grid.symmetric,
        )  # fmt: skip
        ours_scale, ours_zero = scale_zero_point(torch.tensor(rmin), torch.tensor(rmax), grid)
        assert float(ours_scale) == pytest.approx(float(scale), rel=1e-6)
        assert int(ours_zero) == int(zero)


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 4),
    ).eval()  # fmt: skip


class _Mobile(nn.Module):
    """MobileNetV3's hard cases: hard-swish, a depthwise convolution, squeeze-excitation (mean, hard-sigmoid
    gate, product), a residual sum, norms to fold."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.reduce, self.act, self.expand, self.gate = nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Hardsigmoid()
        self.pw = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 4))
        for norm in (self.stem[1], self.dw[1], self.pw[1]):  # norms with statistics of their own
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x)
        y = y * self.gate(self.expand(self.act(self.reduce(y.mean((2, 3), keepdim=True)))))
        return self.head(self.pw(y) + x)


class _Residual(nn.Module):
    """timm's BasicBlock, in place: conv-bn-relu(inplace)-conv-bn, `out += x`, relu(inplace)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.act1, self.act2 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        for norm in (self.stem[1], self.bn1, self.bn2):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = self.stem(x)
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        out += x
        return self.head(self.act2(out))


def _images(count: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, 8, 8)).astype(np.float32)


def _onnx_int8(net: nn.Module, folder: Path, calibration: np.ndarray, settings: QuantSettings) -> Path:
    fp32, int8 = folder / "net.onnx", folder / "net.int8.onnx"
    torch.onnx.export(net, torch.as_tensor(calibration[:2]), str(fp32), input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    pre_process(fp32, folder / "net.pre.onnx")  # the export's own step: norms folded into convolutions
    quantize(folder / "net.pre.onnx", int8, ArrayCalibrationReader(calibration, "images", 32), settings)
    return int8


@pytest.mark.parametrize("settings", SETTINGS[:3], ids=lambda s: s.describe())
def test_rounded_weights_are_the_ones_onnxruntime_stores(settings, tmp_path):
    net = _conv_net()
    int8 = onnx.load(str(_onnx_int8(net, tmp_path, _images(), settings)))
    stored = {init.name: numpy_helper.to_array(init) for init in int8.graph.initializer}
    dequantized = []
    for node in int8.graph.node:  # the weights' DequantizeLinear nodes: (q - zero) * scale per channel
        if node.op_type == "DequantizeLinear" and node.input[0] in stored and stored[node.input[0]].ndim == 4:
            q, scale, zero = (stored[name] for name in node.input[:3])
            shape = (-1, 1, 1, 1)
            dequantized.append((q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape))
    simulation = Simulation(net, settings, torch.as_tensor(_images(4)))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(dequantized) == len(convs) == 2
    for conv, theirs in zip(convs, dequantized, strict=True):
        np.testing.assert_allclose(conv.weight.detach().numpy(), theirs, rtol=0, atol=1e-7)
    simulation.finish()


@pytest.mark.parametrize("make", [_conv_net, _Mobile, _Residual], ids=["relu", "mobile", "residual-in-place"])
def test_the_simulation_gives_onnxruntimes_int8_logits(make, tmp_path):
    settings = QuantSettings(reduce_range=True)
    net, calibration, inputs = make().eval(), _images(128), _images(200, seed=2)
    theirs = host_runner(_onnx_int8(net, tmp_path, calibration, settings), inputs, ["logits"])["logits"]
    with torch.no_grad():
        float_logits = net(torch.as_tensor(inputs)).numpy()
        simulation = Simulation(net, settings, torch.as_tensor(calibration[:8]))
        simulation.calibrate(torch.as_tensor(calibration).split(32))
        simulated = net(torch.as_tensor(inputs)).numpy()
    # the same rounding: most logits are onnxruntime's exactly; the rest are one output step off (integer
    # accumulation and float rescaling meet a rounding tie differently, and a tie upstream travels); float
    # logits are off everywhere
    step = np.diff(np.unique(theirs)).min()  # the logits' quantization step: they all lie on its grid
    exact = np.abs(simulated - theirs) < 1e-3 * step
    assert exact.mean() > 0.75, exact.mean()
    assert np.quantile(np.abs(simulated - theirs), 0.95) < 1.01 * step
    assert (np.abs(float_logits - theirs) < 1e-3 * step).mean() < 0.05


def test_finish_leaves_the_float_network_unchanged():
    net = _conv_net()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    inputs = torch.as_tensor(_images(8))
    with torch.no_grad():
        expected = net(inputs)
    simulation = Simulation(net, QuantSettings(), inputs)
    simulation.calibrate([inputs])
    with torch.no_grad():
        assert not torch.equal(net(inputs), expected)  # rounded while simulating
    finished = simulation.finish()
    assert finished is net and set(net.state_dict()) == set(before)
    assert all(torch.equal(net.state_dict()[name], value) for name, value in before.items())
    with torch.no_grad():
        assert torch.equal(net(inputs), expected)


class _Block(nn.Module):
    """conv -> bn -> relu -> conv -> bn, plus the input: onnxruntime rounds the relu's output and the sum."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.act = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))) + x


def test_a_layer_followed_by_a_norm_or_an_activation_is_not_rounded_on_its_own():
    block = _Block().eval()
    folded = folded_producers(block, torch.as_tensor(_images(2)))
    assert folded == {id(block.conv1), id(block.bn1), id(block.conv2)}  # bn2 feeds the sum: rounded


def test_a_sum_made_in_place_is_not_mistaken_for_the_norm_before_it():
    block = _Residual().eval()
    folded = folded_producers(block, torch.as_tensor(_images(2)))
    # bn2's output is summed in place (`out += x`) before act2 reads it: the sum is another tensor
    assert id(block.bn2) not in folded and id(block.bn1) in folded and id(block.stem[1]) in folded
