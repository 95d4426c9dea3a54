"""THE evaluation transform: training's eval view, int8 calibration and the device all call `preprocess`.

One deterministic function (numpy + PIL only) so a device sees exactly the tensor training evaluated on:

1. Channel mode: the image is expected from `to_pil` (RGB, or L for 1-channel models); other inputs go
   through `to_pil`, a PIL image in another mode through `convert_mode`.
2. Resize with PIL (`interpolation`: bilinear | bicubic | nearest), skipped when the size already matches:
   - rule "square": to (resize_size, resize_size), ignoring the aspect ratio;
   - rule "shorter_side": the shorter side to resize_size, the longer to floor(long * size / short + 0.5)
     (round half up), keeping the aspect ratio.
3. Center crop to `crop` (H, W): top = (height - crop_h) // 2, left = (width - crop_w) // 2 (floor).
4. uint8 -> float32 / 255, then (x - mean) / std per channel, all in float32; HWC -> CHW.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from coreg_edge.runtime.image import convert_mode, to_pil
from coreg_edge.runtime.metadata import MetadataError

RESIZE_RULES = ("square", "shorter_side")
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}

ImageLike = Image.Image | np.ndarray | str | os.PathLike


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    try:
        height, width = (int(part) for part in value)
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"preprocessing {name} must be [H, W] (got {value!r})") from exc
    if height < 1 or width < 1:
        raise MetadataError(f"preprocessing {name} must be positive (got {value!r})")
    return height, width


@dataclass(frozen=True)
class PreprocessConfig:
    """How to turn a decoded image into the model's input; serialised in the ONNX metadata."""

    channels: int
    input_size: tuple[int, int]
    resize_rule: str
    resize_size: int
    interpolation: str
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples (hashable, comparable) and fail early with one readable line.
        set_ = object.__setattr__
        set_(self, "input_size", _pair(self.input_size, "input_size"))
        set_(self, "crop", _pair(self.crop, "crop"))
        set_(self, "mean", tuple(float(v) for v in self.mean))
        set_(self, "std", tuple(float(v) for v in self.std))
        if self.channels not in (1, 3):
            raise MetadataError(f"preprocessing channels must be 1 or 3 (got {self.channels!r})")
        if self.resize_rule not in RESIZE_RULES:
            raise MetadataError(
                f"resize rule must be one of {', '.join(RESIZE_RULES)} (got {self.resize_rule!r})"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise MetadataError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)} (got {self.interpolation!r})"
            )
        if not isinstance(self.resize_size, int) or self.resize_size < 1:
            raise MetadataError(f"resize size must be a positive integer (got {self.resize_size!r})")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise MetadataError(
                f"mean and std need {self.channels} values each (got {self.mean}, {self.std})"
            )
        if min(self.std) <= 0:
            raise MetadataError(f"std must be positive (got {self.std})")
        if self.crop != self.input_size:
            raise MetadataError(f"crop {self.crop} must equal the model's input_size {self.input_size}")
        if max(self.crop) > self.resize_size:
            raise MetadataError(f"crop {self.crop} is larger than the resize size {self.resize_size}")

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> PreprocessConfig:
        """Build from the contract's keys: channels, input_size, resize {rule, size, interpolation}, crop, mean, std."""
        try:
            resize = meta["resize"]
            return cls(
                channels=int(meta["channels"]),
                input_size=meta["input_size"],
                resize_rule=resize["rule"],
                resize_size=int(resize["size"]),
                interpolation=resize.get("interpolation", "bilinear"),
                crop=meta.get("crop") or meta["input_size"],
                mean=meta["mean"],
                std=meta["std"],
            )
        except (KeyError, TypeError) as exc:
            raise MetadataError(
                f"preprocessing metadata is incomplete or malformed ({type(exc).__name__}: {exc})"
            ) from exc

    @classmethod
    def from_overrides(
        cls,
        input_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        channels: int = 3,
        resize_rule: str = "shorter_side",
        resize_size: int | None = None,
        interpolation: str = "bilinear",
    ) -> PreprocessConfig:
        """A config from the few numbers a user knows: crop = input_size, resize to max(input_size) by default."""
        size = _pair(input_size, "input_size")
        mean, std = tuple(mean), tuple(std)
        return cls(
            channels=channels,
            input_size=size,
            resize_rule=resize_rule,
            resize_size=resize_size or max(size),
            interpolation=interpolation,
            crop=size,
            mean=mean * channels if len(mean) == 1 else mean,
            std=std * channels if len(std) == 1 else std,
        )

    def to_metadata(self) -> dict[str, Any]:
        """The contract's keys, JSON-ready (lists, not tuples)."""
        return {
            "channels": self.channels,
            "input_size": list(self.input_size),
            "resize": {
                "rule": self.resize_rule,
                "size": self.resize_size,
                "interpolation": self.interpolation,
            },
            "crop": list(self.crop),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, *self.crop)


def resized_size(width: int, height: int, config: PreprocessConfig) -> tuple[int, int]:
    """(width, height) after the resize rule; round half up so every implementation agrees."""
    size = config.resize_size
    if config.resize_rule == "square":
        return size, size
    if width <= height:
        return size, max(1, int(height * size / width + 0.5))
    return max(1, int(width * size / height + 0.5)), size


def resize_and_crop(image: ImageLike, config: PreprocessConfig) -> np.ndarray:
    """The geometric half of the transform: decoded image -> uint8 (H, W, C) at the model's input size.

    Training caches this array once per item and normalises (or augments) it per step, so its
    evaluation view is bit-identical to what a device computes.
    """
    if not isinstance(image, Image.Image):
        image = to_pil(image, config.channels)
    elif image.mode != ("RGB" if config.channels == 3 else "L"):
        image = convert_mode(image, config.channels)
    target = resized_size(*image.size, config)
    if image.size != target:
        image = image.resize(target, resample=INTERPOLATIONS[config.interpolation])
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    crop_h, crop_w = config.crop
    top, left = (array.shape[0] - crop_h) // 2, (array.shape[1] - crop_w) // 2
    return np.ascontiguousarray(array[top : top + crop_h, left : left + crop_w])


def normalise(array: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The photometric half: uint8 (H, W, C) -> float32 (C, H, W), x / 255, then (x - mean) / std."""
    scaled = array.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))


def preprocess(image: ImageLike, config: PreprocessConfig) -> np.ndarray:
    """One image -> float32 (C, H, W), normalised; see the module docstring for the exact steps."""
    return normalise(resize_and_crop(image, config), config)


def preprocess_batch(images: Iterable[ImageLike], config: PreprocessConfig) -> np.ndarray:
    """Many images -> float32 (N, C, H, W); an empty input gives shape (0, C, H, W)."""
    arrays = [preprocess(image, config) for image in images]
    if not arrays:
        return np.zeros((0, *config.shape), dtype=np.float32)
    return np.stack(arrays)
