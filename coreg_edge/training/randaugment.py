"""RandAugment on batches of uint8 images (torchvision's op set and magnitude ranges), one op per image.

Each op runs once on the sub-batch of images that drew it, with per-image magnitudes; parameters are drawn
on the caller's CPU generator in a fixed order (so seeds and resumes are exact on every device). The ranges
and fills are described in `training.views`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

RANDAUGMENT_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_MAX_ROTATE = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 150.0 / 331.0
_MAX_ENHANCE = 0.9
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def randaugment(images: Tensor, generator: torch.Generator) -> Tensor:
    """One op per image; each op runs once on the sub-batch that drew it, with per-image magnitudes."""
    b = images.shape[0]
    gen = generator
    ops = torch.randint(0, len(RANDAUGMENT_OPS), (b,), generator=gen)
    mags = torch.rand(b, generator=gen)
    signs = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    if b == 0:
        return images
    device = images.device
    out = images.clone()
    geometric = torch.zeros(b, dtype=torch.bool)
    for k, name in enumerate(RANDAUGMENT_OPS):
        chosen = ops == k
        if name in _GEOMETRIC:
            geometric |= chosen
            continue
        sel = chosen.nonzero().flatten()
        if name == "identity" or sel.numel() == 0:
            continue
        idx = sel.to(device)
        sub = images.index_select(0, idx)
        result = _PHOTOMETRIC[name](sub, mags[sel].to(device), signs[sel].to(device))
        out.index_copy_(0, idx, result)
    sel = geometric.nonzero().flatten()
    if sel.numel():
        idx = sel.to(device)
        matrix, shift = _affine_params(ops[sel], mags[sel], signs[sel], images.shape[-1])
        out.index_copy_(0, idx, _warp(images.index_select(0, idx), matrix.to(device), shift.to(device)))
    return out


def _per_image(values: Tensor) -> Tensor:
    return values.reshape(-1, 1, 1, 1)


def _to_uint8(x: Tensor) -> Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _gray(x: Tensor) -> Tensor:
    """(n, 1, H, W) float luma; the image itself when it has one channel."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """PIL's ImageEnhance: degenerate + factor * (image - degenerate), per-image factor."""
    return _to_uint8(degenerate + _per_image(factor) * (x - degenerate))


def _enhance_factor(mags: Tensor, signs: Tensor) -> Tensor:
    return 1.0 + signs * mags * _MAX_ENHANCE


def _autocontrast(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    x = images.float()
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 255.0 / (hi - lo).clamp_min(1.0))
    return _to_uint8((x - torch.where(flat, torch.zeros_like(lo), lo)) * scale)


def _equalize(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    """PIL's ImageOps.equalize per image and channel, with histograms from one scatter_add."""
    n, c, h, w = images.shape
    values = images.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=images.device)
    hist.scatter_add_(1, values, torch.ones_like(values))
    top = hist.gather(1, values.amax(dim=1, keepdim=True))  # count of the highest value present
    step = (h * w - top) // 255
    before = hist.cumsum(1) - hist
    lut = torch.clamp((before + step // 2) // step.clamp_min(1), max=255)
    lut = torch.where(step == 0, torch.arange(256, device=images.device)[None], lut)
    return lut.gather(1, values).to(torch.uint8).reshape(n, c, h, w)


def _solarize(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    threshold = _per_image(256.0 * (1.0 - mags))
    x = images.float()
    return torch.where(x >= threshold, 255 - images, images)


def _color(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    if images.shape[1] == 1:
        return images
    x = images.float()
    return _blend(x, _gray(x), _enhance_factor(mags, signs))


def _posterize(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    bits = 8 - torch.round(mags * 4.0).to(torch.int64)
    mask = torch.bitwise_left_shift(torch.full_like(bits, 0xFF), 8 - bits) & 0xFF
    return images & mask.to(torch.uint8).reshape(-1, 1, 1, 1)


def _contrast(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    x = images.float()
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, _enhance_factor(mags, signs))


def _brightness(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    x = images.float()
    return _blend(x, torch.zeros_like(x), _enhance_factor(mags, signs))


def _sharpness(images: Tensor, mags: Tensor, signs: Tensor) -> Tensor:
    """PIL's SHARPEN-style smoothing kernel (centre 5, total 13) on the interior; borders kept."""
    h, w = images.shape[-2:]
    if h <= 2 or w <= 2:
        return images
    x = images.float()
    # 3x3 box sum from shifted slices (integer-exact in float32, faster than a tiny conv on CPU);
    # (box + 4 * centre) / 13 is never exactly k + 0.5, so rounding is unambiguous.
    rows = x[:, :, :-2] + x[:, :, 1:-1] + x[:, :, 2:]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    blurred = box.add_(x[:, :, 1:-1, 1:-1], alpha=4.0).div_(13.0).round_()
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = blurred
    return _blend(x, degenerate, _enhance_factor(mags, signs))


_PHOTOMETRIC = {
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "solarize": _solarize,
    "color": _color,
    "posterize": _posterize,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
}


def _affine_params(ops: Tensor, mags: Tensor, signs: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Per-image inverse map (output -> source) about the centre: source = matrix @ (u, v) - shift."""
    n = ops.shape[0]
    names = [RANDAUGMENT_OPS.index(name) for name in _GEOMETRIC]
    rotate, shear_x, shear_y, translate_x, translate_y = (ops == k for k in names)
    value = signs * mags
    angle = torch.where(rotate, value * math.radians(_MAX_ROTATE), torch.zeros(n))
    cos, sin = torch.cos(angle), torch.sin(angle)
    shear = value * _MAX_SHEAR
    matrix = torch.stack(
        [
            torch.stack([cos, torch.where(shear_x, shear, -sin)], dim=1),
            torch.stack([torch.where(shear_y, shear, sin), cos], dim=1),
        ],
        dim=1,
    )
    distance = value * (_MAX_TRANSLATE * size)
    zero = torch.zeros(n)
    shift = torch.stack(
        [torch.where(translate_x, distance, zero), torch.where(translate_y, distance, zero)], 1
    )
    return matrix, shift


def _warp(images: Tensor, matrix: Tensor, shift: Tensor) -> Tensor:
    """Nearest-neighbour affine warp with a per-image matrix; pixels from outside the image become 0."""
    n, c, h, w = images.shape
    device = images.device
    u = (torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2.0)[None, None, :]
    v = (torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2.0)[None, :, None]
    m = matrix.reshape(n, 4, 1, 1)
    src_u = m[:, 0] * u + m[:, 1] * v - shift[:, 0, None, None] + (w - 1) / 2.0
    src_v = m[:, 2] * u + m[:, 3] * v - shift[:, 1, None, None] + (h - 1) / 2.0
    col = torch.round(src_u).long()
    row = torch.round(src_v).long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    index = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).reshape(n, 1, h * w)
    warped = images.reshape(n, c, h * w).gather(2, index.expand(n, c, h * w)).reshape(n, c, h, w)
    return warped * inside[:, None].to(torch.uint8)
