"""Training-time image views (eval / weak / strong) on BATCHES of cached uint8 tensors.

The trainer keeps the whole dataset as a uint8 tensor (N, C, H, W) at the model's input size (the output
of `runtime.preprocess.resize_and_crop`) on the training device, and augments each batch there: no PIL,
no per-image Python transforms. Every op is written with per-image parameters and runs once per batch (or
once per RandAugment op on the images that drew it), so a batch of 256 costs a few milliseconds on CPU
and a few kernel launches on CUDA.

Randomness: every draw comes from one CPU `torch.Generator` owned by `Views`, in a fixed order per call,
and only small parameter tensors are moved to the images' device. So a seed fixes the parameters on every
device, CPU outputs are bit-reproducible, and `state_dict()` / `load_state_dict()` resume exactly.
No call reads a value back from the device (no host sync).

Views (COREG_SPEC sections 6 and 9):
- eval: `x.float() / 255`, then `(x - mean) / std` in float32; bit-identical to `runtime.preprocess.normalise`.
- weak: random crop with zero padding (`pad`, default size // 8: 4 at 32 px, 8 at 64 px) + horizontal flip
  with probability 0.5 when `flip` (off for digits, SVHN, GTSRB), then normalise.
- strong, policy "randaugment" (default, the reference code's): weak + RandAugment with one op per image
  drawn uniformly from `RANDAUGMENT_OPS`, magnitude U(0, 1) per image (signed ops get a random sign), +
  a Cutout of side U(0, cutout_max) x size filled grey (125, 123, 114) (123 for 1 channel: PIL's luma of
  that grey), then normalise.
- strong, policy "cutout" (the reference's Fashion-MNIST / FER2013 view): weak + one Cutout of side
  round(16 / 28 x size) (16 px at 28 px), DeVries & Taylor style: centre uniform over the pixels, square
  clipped at the borders, zero-filled AFTER normalisation (their `Cutout` multiplies the normalised
  tensor by a 0/1 mask), so the hole reads 0.0 in the output.

RandAugment magnitudes follow torchvision's RandAugment ranges: rotate +-30 deg, shear +-0.3, translate
+-150/331 of the side, colour/contrast/brightness/sharpness factor 1 +- 0.9, posterize 8..4 bits, solarize
threshold 256..0. Geometric ops use nearest sampling about the image centre and fill with 0 (black, like
torchvision's default fill and the crop's zero padding). Equalize follows PIL's algorithm. Colour is the
identity on 1-channel images (a grey image has no saturation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# "weak" (ours): the strong view is the weak one. For tiny inputs (16 px digits) RandAugment + a Cutout of up
# to half the side destroys the content: measured on the digits demo, Co-Reg's selected peer went from
# 0.939 (randaugment) to 0.953 with "weak", and its post-warm-up epochs improved instead of degrading.
STRONG_POLICIES = ("randaugment", "cutout", "weak")
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
CUTOUT_GREY = (125, 123, 114)
CUTOUT_GREY_1 = (123,)  # PIL "L" of the grey: (125 * 299 + 123 * 587 + 114 * 114) / 1000 = 122.57
_MAX_ROTATE = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 150.0 / 331.0
_MAX_ENHANCE = 0.9
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class ViewConfig:
    """What the views need to know about the cached images and the dataset's augmentation recipe."""

    image_size: int  # H == W of the cached images
    channels: int  # 1 or 3
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips (False for digits, SVHN, GTSRB: flipping changes their meaning)
    pad: int | None = None  # random-crop padding; None -> image_size // 8
    strong: str = "randaugment"  # "randaugment" or "cutout" (Fashion-MNIST, FER2013)
    cutout_max: float = 0.5  # randaugment policy: Cutout side ~ U(0, cutout_max) * image_size

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "mean", tuple(float(v) for v in self.mean))
        set_(self, "std", tuple(float(v) for v in self.std))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3 (got {self.channels!r})")
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer (got {self.image_size!r})")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values each (got {self.mean}, {self.std})")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive (got {self.std})")
        if self.pad is not None and (not isinstance(self.pad, int) or self.pad < 0):
            raise ValueError(f"pad must be a non-negative integer or None (got {self.pad!r})")
        if self.strong not in STRONG_POLICIES:
            raise ValueError(f"strong must be one of {', '.join(STRONG_POLICIES)} (got {self.strong!r})")
        if not 0.0 <= self.cutout_max <= 1.0:
            raise ValueError(f"cutout_max must be in [0, 1] (got {self.cutout_max!r})")

    @property
    def crop_pad(self) -> int:
        """The padding actually used: `pad`, or image_size // 8 (4 at 32 px, 8 at 64 px, 2 at 16 px)."""
        return self.image_size // 8 if self.pad is None else self.pad

    @property
    def cutout_side(self) -> int:
        """The fixed Cutout side of the "cutout" policy: 16 px at 28 px, scaled with the image size."""
        return round(16 / 28 * self.image_size)


class Views:
    """Batched eval / weak / strong views of uint8 (B, C, H, W) images, on the images' device."""

    def __init__(self, config: ViewConfig, seed: int = 0) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(int(seed))
        self._constants: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The generator state: loading it reproduces the following batches exactly."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A checkpoint loaded with map_location=cuda puts the state on the GPU; CPU generators need it back.
        self.generator.set_state(state["generator"].cpu())

    # ----------------------------------------------------------------------------------------- views
    def eval(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> float32 normalised, bit-identical to `runtime.preprocess.normalise`."""
        self._check(images)
        return self._normalise(images)

    def weak(self, images: Tensor) -> Tensor:
        """Random crop with zero padding + per-image horizontal flip (if configured), normalised."""
        self._check(images)
        return self._normalise(self._crop_flip(images))

    def strong(self, images: Tensor) -> Tensor:
        """Weak + RandAugment (1 op, random magnitude) + grey Cutout, or weak + zero Cutout ("cutout")."""
        if self.config.strong == "weak":
            return self.weak(images)
        self._check(images)
        x = self._crop_flip(images)
        if self.config.strong == "cutout":
            return self._zero_cutout(self._normalise(x))
        x = self._randaugment(x)
        return self._grey_cutout(x)

    # ----------------------------------------------------------------------------------------- pieces
    def _check(self, images: Tensor) -> None:
        cfg = self.config
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("views expect a uint8 tensor (B, C, H, W)")
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"views expect images of shape (B, {', '.join(map(str, expected))}), got "
                f"{tuple(images.shape)}"
            )

    def _consts(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        # 255 as a device tensor, not a Python scalar: CUDA divides by a CPU scalar via its reciprocal,
        # which can differ from numpy's true division in the last bit.
        if device not in self._constants:
            shape = (1, self.config.channels, 1, 1)
            self._constants[device] = (
                torch.full((1, 1, 1, 1), 255.0, dtype=torch.float32, device=device),
                torch.tensor(self.config.mean, dtype=torch.float32, device=device).reshape(shape),
                torch.tensor(self.config.std, dtype=torch.float32, device=device).reshape(shape),
            )
        return self._constants[device]

    def _normalise(self, images: Tensor) -> Tensor:
        k255, mean, std = self._consts(images.device)
        # In place: same float32 arithmetic as `(x / 255 - mean) / std`, one allocation instead of three.
        return images.to(torch.float32).div_(k255).sub_(mean).div_(std)

    def _crop_flip(self, images: Tensor) -> Tensor:
        """One gather: pad with zeros, take a per-image (dy, dx) window, columns reversed where flipped."""
        b, c, h, w = images.shape
        pad = self.config.crop_pad
        offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=self.generator)
        flips = torch.rand(b, generator=self.generator) < 0.5
        if not self.config.flip:
            flips = torch.zeros_like(flips)
        if b == 0 or (pad == 0 and not bool(flips.any())):
            return images
        cols = torch.arange(w)
        cols = torch.where(flips[:, None], cols.flip(0), cols) + offsets[:, 1:2]  # (B, W)
        rows = torch.arange(h) + offsets[:, 0:1]  # (B, H)
        wp = w + 2 * pad
        index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).to(images.device)
        padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
        flat = padded.reshape(b, c, -1)
        return flat.gather(2, index.expand(b, c, h * w)).reshape(b, c, h, w)

    def _randaugment(self, images: Tensor) -> Tensor:
        """One op per image; each op runs once on the sub-batch that drew it, with per-image magnitudes."""
        b = images.shape[0]
        gen = self.generator
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

    def _grey_cutout(self, images: Tensor) -> Tensor:
        """Cutout of side round(U(0, cutout_max) * size), centre uniform, clipped; grey in pixel space."""
        b, c, h, w = images.shape
        gen = self.generator
        sides = torch.round(torch.rand(b, generator=gen) * (self.config.cutout_max * w)).long()
        centres = torch.rand(b, 2, generator=gen) * torch.tensor([float(h), float(w)])
        starts = torch.clamp(centres - sides[:, None] / 2.0, min=0.0).floor().long()
        mask = _box_mask(starts, starts + sides[:, None], h, w, images.device)
        grey = CUTOUT_GREY if c == 3 else CUTOUT_GREY_1
        fill = torch.tensor(grey, dtype=torch.uint8, device=images.device).reshape(1, c, 1, 1)
        return self._normalise(torch.where(mask, fill, images))

    def _zero_cutout(self, normalised: Tensor) -> Tensor:
        """DeVries & Taylor Cutout: centre on a pixel, square of `cutout_side` clipped, zero after normalise."""
        b, _, h, w = normalised.shape
        half = self.config.cutout_side // 2
        centres = torch.randint(0, h, (b, 2), generator=self.generator)
        starts = torch.clamp(centres - half, min=0)
        mask = _box_mask(starts, centres + half, h, w, normalised.device)
        return normalised.masked_fill(mask, 0.0)


# --------------------------------------------------------------------------------------------- helpers
def _box_mask(starts: Tensor, stops: Tensor, h: int, w: int, device: torch.device) -> Tensor:
    """(B, 1, H, W) bool on `device`: rows in [start_y, stop_y) and columns in [start_x, stop_x), per image."""
    starts, stops = starts.to(device), stops.to(device)
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    in_rows = (rows >= starts[:, 0:1]) & (rows < stops[:, 0:1])
    in_cols = (cols >= starts[:, 1:2]) & (cols < stops[:, 1:2])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


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
