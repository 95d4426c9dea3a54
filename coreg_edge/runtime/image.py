"""Image decoding shared by training, annotation and the device: PIL only, EXIF orientation applied.

One implementation so that a device decodes a file exactly as training did
(docs/FORMATS.md#images-and-preprocessing).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from coreg_edge.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageDecodeError(UserError):
    """An image file that cannot be read or decoded."""


def convert_mode(image: Image.Image, channels: int = 3) -> Image.Image:
    """RGB for 3-channel models, L for 1-channel ones; palette / RGBA / CMYK / 16-bit go through PIL."""
    target = "RGB" if channels == 3 else "L"
    if image.mode == target:
        return image
    if image.mode in ("P", "PA") or (image.mode == "LA" and target == "RGB"):
        image = image.convert("RGBA")
    if image.mode == "RGBA" and target == "RGB":
        # Composite on white: transparent pixels otherwise turn black, which no camera produces.
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray(
            (array * (255.0 / (65535.0 if peak > 255 else 255.0))).clip(0, 255).astype(np.uint8)
        )
    return image.convert(target)


def load_image(path: str | os.PathLike[str], channels: int = 3) -> Image.Image:
    """Decode a file fully (truncated files fail here, not later), apply EXIF orientation, convert mode."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # PIL only warns between 1x and 2x its limit: a limit is a limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return convert_mode(image, channels)
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{path}: no such file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's bomb guard
        raise ImageDecodeError(
            f"{path}: larger than the {Image.MAX_IMAGE_PIXELS:,} pixel limit ({exc}; raise it with "
            "--max-image-pixels)"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def set_max_image_pixels(limit: int | None) -> int | None:
    """Set PIL's decompression-bomb limit (process-wide; None keeps the current one, PIL's default is about
    89 megapixels); returns the limit before, so a caller can restore it."""
    before = Image.MAX_IMAGE_PIXELS
    if limit is not None:
        if limit < 1:
            raise UserError(f"--max-image-pixels must be >= 1 (got {limit})")
        Image.MAX_IMAGE_PIXELS = int(limit)
    return before


@contextlib.contextmanager
def pixel_limit(limit: int | None) -> Iterator[None]:
    """PIL's decompression-bomb limit set to `limit` for the block (None: unchanged), then restored."""
    before = set_max_image_pixels(limit)
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def to_pil(image: Image.Image | np.ndarray | str | os.PathLike[str], channels: int = 3) -> Image.Image:
    """Accept a path, a PIL image, or a uint8 array (HWC RGB / HW grayscale) and return a PIL image."""
    if isinstance(image, Image.Image):
        return convert_mode(ImageOps.exif_transpose(image), channels)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UserError(f"numpy images must be uint8 (got {image.dtype})")
        if image.ndim >= 2 and 0 in image.shape[:2]:
            raise UserError(f"numpy image is empty (shape {image.shape})")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
            return convert_mode(
                Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[2] == 1 else image),
                channels,
            )
        raise UserError(f"numpy images must be HxW or HxWx3 (got shape {image.shape})")
    return load_image(image, channels)


def find_images(
    paths: str | os.PathLike[str] | list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...],
) -> list[Path]:
    """Files as given, folders expanded recursively to their images (IMAGE_EXTENSIONS, any case), sorted.

    Hidden files and folders inside a folder (`.DS_Store`, `._x.jpg`, `.ipynb_checkpoints`) are skipped;
    a file named explicitly is kept whatever its extension, and a missing one is kept so the caller can
    report it per item.
    """
    found: list[Path] = []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        path = Path(path)
        if not path.is_dir():
            found.append(path)
            continue
        inside = [
            p
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.is_file()
        ]
        found.extend(sorted(inside, key=lambda p: p.relative_to(path).parts))
    return found
