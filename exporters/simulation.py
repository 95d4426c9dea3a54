"""onnxruntime's static QDQ int8, simulated in PyTorch: the same rounding of the same tensors, with
gradients passing straight through (qat.py fine-tunes under it, bias_correction.py measures its bias).

onnxruntime rounds every weight (per output channel, symmetric) and nearly every tensor between operators
(per tensor, asymmetric, on ranges calibrated as min of mins and max of maxes); it folds a norm into the
convolution before it and removes a Relu that follows, so only the last tensor of such a run is rounded
(graph read from a quantized test_resnet: Conv(+BN+Relu) -> Q, Add(+Relu) -> Q, AveragePool -> Q, Gemm -> Q).

    weight_grid, activation_grid   onnxruntime's integer ranges for a QuantSettings (quant_utils' rules)
    scale_zero_point               onnxruntime's compute_scale_zp, on tensors (per channel or per tensor)
    fake_quantize                  quantize then dequantize, exactly as its quantizer rounds weights
    batches                        preprocessed images as tensors, batch by batch
    folded_producers               which layers' outputs onnxruntime never rounds (a norm or a Relu follows)
    Simulation                     a network with those roundings (hooks; `finish` removes them)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from coreg_edge.exporters.targets import QuantSettings

QUANTIZED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.ELU,
)  # fmt: skip
#: Ops whose output onnxruntime rounds with its input's scale and zero point (their values stay within the
#: input's range, so one observed range serves both).
SHARED = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
#: Ops whose output gets a range of its own (a global average pool: GlobalAveragePool's output is
#: calibrated, not shared; measured on a quantized residual block).
OWN_RANGE = (nn.AdaptiveAvgPool2d,)
#: Activations onnxruntime removes after a rounded tensor (Relu, Clip): only their output is rounded.
REMOVED = (nn.ReLU, nn.ReLU6)
#: Activations exported as x * gate(x) (opset 17 has no HardSwish kernel to fuse): the input, the gate
#: and the product are each rounded.
GATED: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {
    nn.Hardswish: nn.functional.hardsigmoid,
    nn.SiLU: torch.sigmoid,
}


@dataclass(frozen=True)
class Grid:
    """An integer range values are rounded onto, and whether it is symmetric around zero."""

    qmin: int
    qmax: int
    symmetric: bool


def weight_grid(settings: QuantSettings) -> Grid:
    """onnxruntime's weight range: symmetric (its WeightSymmetric default); 7-bit with reduce_range."""
    if settings.weight_type == "int8":
        return Grid(-64, 64, True) if settings.reduce_range else Grid(-127, 127, True)
    return Grid(0, 127, True) if settings.reduce_range else Grid(0, 255, True)


def activation_grid(settings: QuantSettings) -> Grid:
    """onnxruntime's activation range: asymmetric (ActivationSymmetric defaults to False), full width."""
    return Grid(0, 255, False) if settings.activation_type == "uint8" else Grid(-128, 127, False)


def scale_zero_point(rmin: torch.Tensor, rmax: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """onnxruntime's compute_scale_zp, elementwise: the range widened to hold zero (and made symmetric when
    the grid is), scale = range / steps, zero point rounded half to even; a zero range gets scale 1."""
    rmin = torch.clamp(rmin.double(), max=0.0)
    rmax = torch.clamp(rmax.double(), min=0.0)
    if grid.symmetric:
        absmax = torch.maximum(rmin.abs(), rmax.abs())
        rmin, rmax = -absmax, absmax
    scale = (rmax - rmin) / (grid.qmax - grid.qmin)
    tiny = scale < torch.finfo(torch.float32).tiny
    scale = torch.where(tiny, torch.ones_like(scale), scale)
    if grid.symmetric:
        zero = torch.full_like(scale, float(round((grid.qmin + grid.qmax) / 2)))
    else:
        zero = torch.round(grid.qmin - rmin / scale)
    zero = torch.where(tiny, torch.zeros_like(zero), zero)
    return scale.float(), zero.clamp(grid.qmin, grid.qmax).to(torch.int32)


def fake_quantize(
    value: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: Grid, *, snap: bool = False
) -> torch.Tensor:
    """Quantize then dequantize as onnxruntime's quantizer does (divide, round half to even, add the zero
    point, clip); `scale` and `zero` broadcast (per channel: shaped for dimension 0). The gradient passes
    straight through where the value was not clipped (the straight-through estimator). `snap`, as
    onnxruntime's integer pooling kernels round their outputs (QuantizeLinear does not): a value within
    1/1024 of a step from a tie is the tie (an average of four integers meets exact ties float arithmetic
    misses by a hair), and the tie goes to the even integer after the zero point is added."""
    ratio = value / scale
    if snap:
        steps = torch.round(torch.round(ratio * 1024) / 1024 + zero)
    else:
        steps = torch.round(ratio) + zero
    inside = (steps >= grid.qmin) & (steps <= grid.qmax)
    rounded = (steps.clamp(grid.qmin, grid.qmax) - zero) * scale
    return rounded.detach() + (value - value.detach()) * inside


def batches(images: np.ndarray, batch_size: int, device: str = "cpu") -> Iterator[torch.Tensor]:
    """Preprocessed images (N x C x H x W, a memory map or an array) as tensors on `device`, in order."""
    for start in range(0, len(images), batch_size):
        yield torch.as_tensor(np.ascontiguousarray(images[start : start + batch_size])).to(device)


def _per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


class RoundedWeight(nn.Module):
    """A parametrization: the weight as onnxruntime stores it (per output channel, or one scale)."""

    def __init__(self, grid: Grid, per_channel: bool) -> None:
        super().__init__()
        self.grid, self.per_channel = grid, per_channel
        self.enabled = True  # off while ranges are observed: onnxruntime calibrates the float network

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        flat = weight.detach().flatten(1) if self.per_channel else weight.detach().reshape(1, -1)
        scale, zero = scale_zero_point(flat.min(1).values, flat.max(1).values, self.grid)
        if not self.per_channel:
            scale, zero = scale.expand(len(weight)), zero.expand(len(weight))
        return fake_quantize(weight, _per_channel(scale, weight), _per_channel(zero, weight).float(), self.grid)


class RoundedActivation:
    """A hook: one tensor rounded per tensor with the range calibration measured (min of mins, max of maxes
    over the calibration images, as onnxruntime's MinMax calibrator); while observing, it only measures."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.observing = False
        self.rmin: torch.Tensor | None = None
        self.rmax: torch.Tensor | None = None
        self._params: tuple[torch.Tensor, torch.Tensor] | None = None  # scale, zero: from the range, once

    def reset(self) -> None:
        self.rmin = self.rmax = self._params = None

    def __call__(self, value: torch.Tensor, snap: bool = False) -> torch.Tensor:
        if self.observing:
            low, high = value.detach().min(), value.detach().max()
            self.rmin = low if self.rmin is None else torch.minimum(self.rmin, low)
            self.rmax = high if self.rmax is None else torch.maximum(self.rmax, high)
            self._params = None
            return value
        if self.rmin is None or self.rmax is None:
            return value
        if self._params is None:
            scale, zero = scale_zero_point(self.rmin, self.rmax, self.grid)
            self._params = scale.to(value.device), zero.float().to(value.device)
        return fake_quantize(value, *self._params, self.grid, snap=snap)


def is_activation(module: nn.Module) -> bool:
    """torch's activation modules, timm's own, and timm's BatchNormAct (a norm with its activation inside)."""
    if isinstance(module, ACTIVATIONS) or type(module).__module__.startswith("timm.layers.activations"):
        return True
    return _norm_act(module) is not None


def _norm_act(module: nn.Module) -> nn.Module | None:
    """The activation inside timm's BatchNormAct, if any."""
    act = getattr(module, "act", None) if isinstance(module, NORMS) else None
    return None if act is None or isinstance(act, nn.Identity) else act


def folded_producers(network: nn.Module, example: torch.Tensor) -> set[int]:
    """The layers (ids) whose output goes straight into a norm or a Relu: onnxruntime folds the norm into
    the convolution and removes a Relu after it, so it rounds only the last tensor of such a run. Found by
    running `example` once and following each output tensor to the module that takes it."""
    produced: dict[int, tuple[nn.Module, torch.Tensor, int]] = {}  # tensors kept alive: ids are not reused
    folded: set[int] = set()

    def after(module: nn.Module, _args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (module, out, out._version)

    def before(_module: nn.Module, args: Any) -> None:
        found = produced.get(id(args[0])) if args and isinstance(args[0], torch.Tensor) else None
        if found is not None and found[2] == args[0]._version:  # not changed in place since (x += shortcut)
            folded.add(id(found[0]))

    hooks = []
    for module in network.modules():
        if isinstance(module, (*QUANTIZED_LAYERS, *NORMS)):
            hooks.append(module.register_forward_hook(after))
        if isinstance(module, (*NORMS, *REMOVED)):
            hooks.append(module.register_forward_pre_hook(before))
    try:
        with torch.no_grad():
            network(example)
    finally:
        for hook in hooks:
            hook.remove()
    return folded


class Simulation:
    """`network` (changed in place) with the rounding of its int8 file. onnxruntime's static QDQ rounds
    every weight (per channel) and nearly every tensor between operators (per tensor); here: each
    convolution's and linear layer's weight and input; the output of every activation and global average
    pool, a pooling layer's input and output on the input's grid (SHARED),
    and of every convolution, linear layer or norm whose output does not go straight into a norm or a Relu
    (folded_producers); the input of every other activation, and inside a gated one (hard-swish, SiLU) its
    gate; and the logits. A tensor already rounded with the same range rounds to itself, so overlapping
    points cost nothing."""

    def __init__(self, network: nn.Module, settings: QuantSettings, example: torch.Tensor):
        self.network = network
        weights, activations = weight_grid(settings), activation_grid(settings)
        self.points: list[RoundedActivation] = []
        self.weights: list[RoundedWeight] = []
        self._rounded_by: dict[int, tuple[RoundedActivation, torch.Tensor, int]] = {}  # this pass's rounded tensors
        self._hooks: list[Any] = [network.register_forward_pre_hook(lambda _m, _args: self._rounded_by.clear())]
        folded = folded_producers(network, example)
        for module in network.modules():
            if isinstance(module, QUANTIZED_LAYERS):
                self.weights.append(RoundedWeight(weights, settings.per_channel))
                parametrize.register_parametrization(module, "weight", self.weights[-1])
                self._round_input(module, self._point(activations))
            if is_activation(module) and not isinstance(module, REMOVED) and _norm_act(module) is None:
                self._round_activation_input(module, activations)  # before the output's: hooks run in order
            if isinstance(module, SHARED):
                self._round_shared(module, self._point(activations))
            elif module is not network and (
                is_activation(module)
                or isinstance(module, OWN_RANGE)
                or (isinstance(module, (*QUANTIZED_LAYERS, *NORMS)) and id(module) not in folded)
            ):
                self._round_output(module, self._point(activations))
        self._round_output(network, self._point(activations))
        self._hooks.append(network.register_forward_hook(lambda *_: self._rounded_by.clear(), always_call=True))

    def _round(self, point: RoundedActivation, value: torch.Tensor, snap: bool = False) -> torch.Tensor:
        """`value` on `point`'s grid, unless this pass rounded it already (onnxruntime rounds a tensor
        once, however many operators read it). `snap`: as an integer pooling kernel rounds (fake_quantize)."""
        if self._rounded_point(value) is not None:
            return value
        rounded = point(value, snap)
        self._rounded_by[id(rounded)] = (point, rounded, rounded._version)  # kept alive: ids stay unique
        return rounded

    def _rounded_point(self, value: torch.Tensor) -> RoundedActivation | None:
        """The point that rounded `value` in this pass, if it is unchanged since (an in-place sum or
        activation makes it another tensor under the same id)."""
        found = self._rounded_by.get(id(value))
        return found[0] if found is not None and found[2] == value._version else None

    def _round_input(self, module: nn.Module, point: RoundedActivation) -> None:
        self._hooks.append(module.register_forward_pre_hook(lambda _m, args: (self._round(point, args[0]), *args[1:])))

    def _round_output(self, module: nn.Module, point: RoundedActivation) -> None:
        self._hooks.append(module.register_forward_hook(lambda _m, _args, out: self._round(point, out)))

    def _round_shared(self, module: nn.Module, own: RoundedActivation) -> None:
        """A pooling layer or flatten: its output on the grid its input was rounded to (a chain of them
        shares one grid), its input rounded by `own` when nothing rounded it yet (a sum's output)."""
        chosen: dict[str, RoundedActivation] = {}

        def before(_module: nn.Module, args: Any) -> tuple[Any, ...]:
            source = self._rounded_point(args[0])
            chosen["point"] = source if source is not None else own
            return args if source is not None else (self._round(own, args[0]), *args[1:])

        self._hooks.append(module.register_forward_pre_hook(before))
        self._hooks.append(
            module.register_forward_hook(lambda _m, _args, out: self._round(chosen.pop("point"), out, snap=True))
        )

    def _round_activation_input(self, module: nn.Module, grid: Grid) -> None:
        """Round an activation's input; a gated one computes input * round(gate(input)) from the rounded
        input (kept aside: an in-place activation overwrites what it is given)."""
        point, gate = self._point(grid), GATED.get(type(module))
        if gate is None:
            self._round_input(module, point)
            return
        gate_point, kept = self._point(grid), {}

        def before(_module: nn.Module, args: Any) -> tuple[Any, ...]:
            kept["input"] = self._round(point, args[0])
            return (kept["input"].clone(), *args[1:])

        def after(_module: nn.Module, _args: Any, _out: torch.Tensor) -> torch.Tensor:
            value = kept.pop("input")
            return value * self._round(gate_point, gate(value))

        self._hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def _point(self, grid: Grid) -> RoundedActivation:
        self.points.append(RoundedActivation(grid))
        return self.points[-1]

    @contextmanager
    def observing(self) -> Iterator[None]:
        """Measure fresh activation ranges on the float network, as onnxruntime's calibration does (no
        rounding meanwhile)."""
        for point in self.points:
            point.reset()
            point.observing = True
        for weight in self.weights:
            weight.enabled = False
        try:
            yield
        finally:
            for point in self.points:
                point.observing = False
            for weight in self.weights:
                weight.enabled = True

    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Observe every point's range on `batches` (onnxruntime's MinMax calibration)."""
        with self.observing(), torch.no_grad():
            for batch in batches:
                self.network(batch)

    def finish(self) -> nn.Module:
        """The network with its hooks removed and its float weights kept (onnxruntime rounds them itself,
        onto the same grid: the rounded weight's largest value is the float one's)."""
        for hook in self._hooks:
            hook.remove()
        self._rounded_by.clear()
        for module in self.network.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        return self.network
