"""The copies the int8 ladder quantizes when the network itself fails: bias-corrected (bias_correction.py)
and fine-tuned under the target's rounding (qat.py). Each on a network whose real onnxruntime int8 file
fails the int8 parity checks, and whose copy's file passes them, on images neither saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from coreg_edge.exporters.bias_correction import correct_bias
from coreg_edge.exporters.calibration import ArrayCalibrationReader
from coreg_edge.exporters.parity import CHECK_SETS, failed_check
from coreg_edge.exporters.qat import distillation_loss, epochs_within_budget, fine_tune
from coreg_edge.exporters.quantize import pre_process, quantize
from coreg_edge.exporters.sensitivity import host_runner
from coreg_edge.exporters.targets import QuantSettings

FEATURES = 64
SMALL = 0.4  # of one weight step: rounds to zero on every target's grid


class _Flat(nn.Module):
    """Images (1 x 8 x 8) -> flattened -> one linear layer (the shape the exporter hands onnxruntime)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


def _biased_network(settings: QuantSettings) -> nn.Module:
    """Two classes, each led by one pixel; class 0 also sums 62 small weights that int8 rounds to zero.
    The fp32 network makes up for their mean with class 1's bias, so its decision is x0 > x1 (give or
    take a little); the int8 file loses the sum, not the bias, and moves the boundary by about 0.1."""
    steps = 64 if settings.reduce_range else 127
    weight = torch.zeros(2, FEATURES)
    weight[0, 0] = weight[1, 1] = 1.0
    weight[0, 2:] = SMALL / steps
    linear = nn.Linear(FEATURES, 2)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(torch.tensor([0.0, float(weight[0, 2:].sum()) * 0.5]))  # mean pixel: 0.5
    return _Flat(linear).eval()


def _images(count: int, seed: int) -> np.ndarray:
    """Pixels 0 and 1 anywhere in [0, 1], the others near their mean: the small weights' sum varies
    little around what int8 loses, so the fp32 decision is x0 > x1 up to a hair."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.45, 0.55, size=(count, FEATURES)).astype(np.float32)
    images[:, :2] = rng.uniform(size=(count, 2))
    return images.reshape(count, 1, 8, 8)


def _int8_logits(network: nn.Module, folder: Path, calibration: np.ndarray, settings: QuantSettings,
                 inputs: np.ndarray) -> np.ndarray:  # fmt: skip
    folder.mkdir(exist_ok=True)
    fp32, pre, int8 = folder / "net.onnx", folder / "net.pre.onnx", folder / "net.int8.onnx"
    torch.onnx.export(network, torch.as_tensor(calibration[:2]), str(fp32), input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    pre_process(fp32, pre)
    quantize(pre, int8, ArrayCalibrationReader(calibration, "images", 32), settings)
    return host_runner(int8, inputs, ["logits"])["logits"]


def _verdict(network: nn.Module, copy: nn.Module, folder: Path, settings: QuantSettings) -> tuple[str | None, str | None]:
    """The int8 checks' first failure (None: passed) for the network's own file and for the copy's."""
    calibration, inputs = _images(256, seed=1), _images(400, seed=2)  # parity never sees calibration
    with torch.no_grad():
        reference = network(torch.as_tensor(inputs)).numpy()
    labels = np.full(len(inputs), -1)  # unlabelled: cosine and top-1 agreement judge
    results = []
    for name, candidate in (("plain", network), ("copy", copy)):
        logits = _int8_logits(candidate, folder / name, calibration, settings, inputs)
        results.append(failed_check(CHECK_SETS["int8"].run(reference, logits, labels)))
    return results[0], results[1]


SETTINGS = [QuantSettings(), QuantSettings(reduce_range=True)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.describe())
def test_bias_correction_wins_back_what_rounding_shifts(settings, tmp_path):
    network = _biased_network(settings)
    corrected, record = correct_bias(network, _images(256, seed=1), settings)
    plain, copy = _verdict(network, corrected, tmp_path, settings)
    assert plain is not None  # the network's own int8 file fails
    assert copy is None, copy  # the corrected copy's passes
    assert record["layers"] == 1 and record["images"] == 256
    # only the bias moved, by about the lost mean (62 weights x 0.4 steps x mean pixel 0.5)
    steps = 64 if settings.reduce_range else 127
    assert torch.equal(corrected.linear.weight, network.linear.weight)
    lost = 62 * SMALL / steps * 0.5
    assert float(corrected.linear.bias[0] - network.linear.bias[0]) == pytest.approx(lost, rel=0.1)
    assert float(corrected.linear.bias[1] - network.linear.bias[1]) == pytest.approx(0.0, abs=0.1 * lost)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.describe())
def test_fine_tuning_under_the_rounding_wins_it_back_without_labels(settings, tmp_path):
    network = _biased_network(settings)
    tuned = fine_tune(network, _images(1024, seed=3), _images(256, seed=1), settings, epochs=16, lr=1e-3)
    plain, copy = _verdict(network, tuned.network, tmp_path, settings)
    assert plain is not None
    assert copy is None, copy
    assert tuned.record["epochs"] == 16 and len(tuned.record["loss"]) == 16
    assert tuned.record["loss"][-1] < tuned.record["loss"][0]
    assert not any(p.requires_grad for p in tuned.network.parameters())
    with torch.no_grad():  # the network handed in is left as it was
        assert torch.equal(network.linear.weight, _biased_network(settings).linear.weight)


def test_the_loss_is_zero_only_when_the_logits_match():
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    assert float(distillation_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(teacher + 1.0, teacher)) > 0  # same probabilities, shifted logits
    assert float(distillation_loss(teacher.flip(1), teacher)) > float(distillation_loss(teacher * 0.9, teacher))


@pytest.mark.parametrize(
    "epochs, images, passes, expected",
    [(3, 1000, None, 3), (3, 1000, 100_000, 3), (3, 1000, 5000, 1), (3, 1000, 7000, 2), (5, 1000, 10, 1)],
)
def test_the_budget_is_a_share_of_the_trainings_image_passes(epochs, images, passes, expected):
    assert epochs_within_budget(epochs, images, passes) == expected
