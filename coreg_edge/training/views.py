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

Views (docs/ALGORITHM.md sections 6 and 9):
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

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.training.randaugment import randaugment

# "weak" (ours): the strong view is the weak one. For tiny inputs (16 px digits) RandAugment + a Cutout of up
# to half the side destroys the content: measured on the digits demo, Co-Reg's selected peer went from
# 0.939 (randaugment) to 0.953 with "weak", and its post-warm-up epochs improved instead of degrading.
STRONG_POLICIES = ("randaugment", "cutout", "weak")
CUTOUT_GREY = (125, 123, 114)
CUTOUT_GREY_1 = (123,)  # PIL "L" of the grey: (125 * 299 + 123 * 587 + 114 * 114) / 1000 = 122.57


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

    @classmethod
    def of(cls, pre: PreprocessConfig, *, flip: bool, strong: str = "weak") -> ViewConfig:
        """The views of images cached with the preprocessing `pre` (its size, channels, mean and std)."""
        return cls(pre.input_size[0], pre.channels, pre.mean, pre.std, flip=flip, strong=strong)

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
        """One op per image (training.randaugment), drawn on this object's generator."""
        return randaugment(images, self.generator)

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
