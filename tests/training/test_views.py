"""Batched training views: eval matches the runtime bit for bit; weak/strong do what the spec says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from coreg_edge.runtime.preprocess import PreprocessConfig, normalise
from coreg_edge.training import randaugment as ops_module
from coreg_edge.training.randaugment import RANDAUGMENT_OPS
from coreg_edge.training.views import CUTOUT_GREY, ViewConfig, Views

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def config(size: int = 16, channels: int = 3, **kwargs) -> ViewConfig:
    mean, std = (CIFAR_MEAN, CIFAR_STD) if channels == 3 else ((0.1307,), (0.3081,))
    return ViewConfig(
        image_size=size, channels=channels, mean=mean, std=std, flip=kwargs.pop("flip", True), **kwargs
    )


def random_images(n: int, size: int = 16, channels: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # 1..255: no pixel is 0, so a zero-padded border can never look like image content.
    return torch.randint(1, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)


def translates(image: torch.Tensor, pad: int) -> torch.Tensor:
    """Every zero-filled shift of one (C, H, W) image by (dy, dx) in [-pad, pad]^2: (K, C, H, W)."""
    _, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    return torch.stack(
        [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    )


def match_index(outputs: torch.Tensor, candidates: torch.Tensor, views: Views) -> list[int]:
    """For each normalised output, the index of the uint8 candidate it equals exactly (-1 if none)."""
    normalised = views.eval(candidates)
    equal = (outputs[:, None] == normalised[None]).flatten(2).all(dim=2)
    return [int(row.nonzero()[0]) if row.any() else -1 for row in equal]


@pytest.mark.parametrize("channels", [1, 3])
def test_eval_is_bit_identical_to_runtime_normalise(channels):
    images = torch.arange(256, dtype=torch.uint8).repeat(2 * channels * 16 * 16 // 256 * 3)
    images = images[: 3 * channels * 16 * 16].reshape(3, channels, 16, 16)
    images[2] = random_images(1, channels=channels)[0]
    cfg = config(channels=channels)
    runtime = PreprocessConfig.from_overrides(16, cfg.mean, cfg.std, channels=channels)
    out = Views(cfg).eval(images)
    expected = np.stack([normalise(img.permute(1, 2, 0).numpy(), runtime) for img in images])
    assert out.dtype == torch.float32
    assert np.abs(out.numpy() - expected).max() == 0.0


def test_pad_defaults_scale_with_the_size():
    assert [config(size).crop_pad for size in (16, 28, 32, 64)] == [2, 3, 4, 8]
    assert config(32, pad=0).crop_pad == 0
    assert config(28, strong="cutout").cutout_side == 16


def test_weak_without_flip_is_a_pure_translate():
    image = random_images(1)[0]
    views = Views(config(flip=False, pad=3))
    out = views.weak(image.expand(64, -1, -1, -1))
    assert out.shape == (64, 3, 16, 16) and out.dtype == torch.float32
    found = match_index(out, translates(image, 3), views)
    assert -1 not in found, "every weak view is a zero-filled shift of the input, never a flip"
    assert len(set(found)) > 10, "offsets are drawn per image"


def test_weak_with_flip_flips_about_half_and_only_shifts_content():
    image = random_images(1, seed=1)[0]
    views = Views(config(flip=True, pad=0))
    out = views.weak(image.expand(2000, -1, -1, -1))
    found = match_index(out, torch.stack([image, image.flip(-1)]), views)
    assert -1 not in found
    assert 900 < sum(found) < 1100

    views = Views(config(flip=True, pad=2))
    out = views.weak(image.expand(200, -1, -1, -1))
    plain, flipped = translates(image, 2), translates(image.flip(-1), 2)
    found = match_index(out, torch.cat([plain, flipped]), views)
    assert -1 not in found
    assert 0 < sum(index >= len(plain) for index in found) < 200


def test_strong_changes_images_and_keeps_shape_and_dtype():
    images = random_images(64, size=32)
    views = Views(config(32))
    out = views.strong(images)
    assert out.shape == images.shape and out.dtype == torch.float32 and out.device == images.device
    assert torch.isfinite(out).all()
    changed = (out != views.eval(images)).flatten(1).any(dim=1)
    assert changed.float().mean() > 0.9


def test_randaugment_cutout_is_a_grey_square():
    # Black images stay black through crop and every RandAugment op, so only the Cutout shows.
    size, n = 32, 160
    views = Views(config(size))
    out = views.strong(torch.zeros(n, 3, size, size, dtype=torch.uint8))
    black = views.eval(torch.zeros(1, 3, size, size, dtype=torch.uint8))
    grey = torch.tensor(CUTOUT_GREY, dtype=torch.uint8).reshape(1, 3, 1, 1).expand(1, 3, size, size)
    grey = views.eval(grey.contiguous())
    is_grey = (out == grey).all(dim=1)
    assert ((out == black).all(dim=1) | is_grey).all()
    sides = []
    for mask in is_grey:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        if rows.numel():
            box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            assert box.all(), "the hole is one filled rectangle"
            sides.append(max(rows.numel(), cols.numel()))
    assert len(sides) > n // 2
    assert max(sides) <= size // 2 and max(sides) >= size // 2 - 2


@pytest.mark.parametrize("channels", [1, 3])
def test_cutout_policy_zero_fills_a_fixed_square_after_normalising(channels):
    size, n = 28, 200
    views = Views(config(size, channels=channels, strong="cutout", pad=0))
    images = torch.full((n, channels, size, size), 200, dtype=torch.uint8)
    out = views.strong(images)
    reference = views.eval(images[:1])
    hole = (out == 0.0).all(dim=1)
    assert ((out == reference) | (out == 0.0)).all()
    full = 0
    for mask in hole:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert 0 < rows.numel() <= 16 and 0 < cols.numel() <= 16
        assert mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
        full += rows.numel() == cols.numel() == 16
    assert full > n // 10  # centre at least 8 px from both borders: (13 / 28)^2 of the draws


def test_same_seed_same_views_and_different_seed_differs():
    images = random_images(32)
    a, b, c = Views(config(), seed=5), Views(config(), seed=5), Views(config(), seed=6)
    for method in ("weak", "strong", "weak"):
        out_a, out_b, out_c = (getattr(v, method)(images) for v in (a, b, c))
        assert torch.equal(out_a, out_b)
        assert not torch.equal(out_a, out_c)


def test_state_dict_round_trip_reproduces_the_next_batch():
    images = random_images(32)
    views = Views(config(), seed=3)
    views.strong(images)
    state = views.state_dict()
    expected = views.strong(images), views.weak(images)
    resumed = Views(config(), seed=99)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.strong(images), expected[0])
    assert torch.equal(resumed.weak(images), expected[1])


@pytest.mark.parametrize("strong", ["randaugment", "cutout"])
def test_one_channel_views(strong):
    images = random_images(48, size=16, channels=1)
    views = Views(config(16, channels=1, strong=strong, flip=False))
    for out in (views.eval(images), views.weak(images), views.strong(images)):
        assert out.shape == (48, 1, 16, 16) and out.dtype == torch.float32


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", RANDAUGMENT_OPS)
def test_each_randaugment_op_keeps_uint8_and_zero_magnitude_is_mostly_identity(op, channels):
    images = random_images(6, size=16, channels=channels, seed=2)
    k = RANDAUGMENT_OPS.index(op)
    if op in ops_module._PHOTOMETRIC:
        run = ops_module._PHOTOMETRIC[op]
        out = run(images, torch.rand(6), torch.ones(6))
        zero = run(images, torch.zeros(6), torch.ones(6))
    elif op == "identity":
        return
    else:
        matrix, shift = ops_module._affine_params(torch.full((6,), k), torch.rand(6), torch.ones(6), 16)
        out = ops_module._warp(images, matrix, shift)
        matrix, shift = ops_module._affine_params(torch.full((6,), k), torch.zeros(6), torch.ones(6), 16)
        zero = ops_module._warp(images, matrix, shift)
    assert out.shape == images.shape and out.dtype == torch.uint8
    if op not in ("autocontrast", "equalize", "solarize", "sharpness"):
        # Magnitude-free ops always act; solarize at magnitude 0 only flips the 255s; the rest are no-ops.
        assert torch.equal(zero, images)


def test_equalize_and_smoothing_match_pil_and_posterize_solarize_translate_are_exact():
    images = random_images(4, size=16, seed=4) // 3 + 40  # a narrow histogram, so equalize has work to do
    ours = ops_module._equalize(images, torch.zeros(4), torch.ones(4))
    for image, result in zip(images, ours, strict=True):
        pil = ImageOps.equalize(Image.fromarray(image.permute(1, 2, 0).numpy()))
        assert np.array_equal(result.permute(1, 2, 0).numpy(), np.asarray(pil))

    smooth_only = ops_module._sharpness(images, torch.full((4,), 1 / 0.9), -torch.ones(4))  # factor 0
    for image, result in zip(images, smooth_only, strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).filter(ImageFilter.SMOOTH)
        assert np.array_equal(result.permute(1, 2, 0).numpy(), np.asarray(pil))

    posterized = ops_module._posterize(images, torch.ones(4), torch.ones(4))  # 4 bits
    assert torch.equal(posterized, images & 0xF0)
    solarized = ops_module._solarize(images, torch.full((4,), 0.5), torch.ones(4))  # threshold 128
    assert torch.equal(solarized, torch.where(images >= 128, 255 - images, images))

    k = RANDAUGMENT_OPS.index("translate_x")
    mags = torch.full((4,), 3.0 / (ops_module._MAX_TRANSLATE * 16))  # exactly 3 px to the right
    matrix, shift = ops_module._affine_params(torch.full((4,), k), mags, torch.ones(4), 16)
    moved = ops_module._warp(images, matrix, shift)
    assert torch.equal(moved[..., 3:], images[..., :-3]) and (moved[..., :3] == 0).all()


def test_rejects_wrong_inputs():
    views = Views(config(16))
    with pytest.raises(ValueError, match="uint8"):
        views.weak(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        views.strong(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="strong"):
        config(16, strong="autoaugment")
    assert views.strong(torch.zeros(0, 3, 16, 16, dtype=torch.uint8)).shape == (0, 3, 16, 16)


@pytest.mark.parametrize("device", DEVICES)
def test_views_stay_on_the_device_and_match_cpu_parameters(device):
    images = random_images(64, size=32)
    runtime = PreprocessConfig.from_overrides(32, CIFAR_MEAN, CIFAR_STD)
    views = Views(config(32), seed=1)
    on_device = images.to(device)
    out = views.eval(on_device)
    assert out.device.type == device
    expected = np.stack([normalise(img.permute(1, 2, 0).numpy(), runtime) for img in images])
    assert np.abs(out.cpu().numpy() - expected).max() == 0.0
    cpu_views = Views(config(32), seed=1)
    weak, weak_cpu = views.weak(on_device), cpu_views.weak(images)
    assert weak.device.type == device and torch.equal(weak.cpu(), weak_cpu)
    strong = views.strong(on_device)
    assert strong.device.type == device and strong.shape == images.shape
    # Same parameters on every device; only float rounding inside a few ops may differ by one level.
    close = (strong.cpu() - cpu_views.strong(images)).abs() <= 1.0 / 255 / min(CIFAR_STD) + 1e-5
    assert close.float().mean() > 0.99
