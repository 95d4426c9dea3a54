"""The one evaluation transform against an independent torch reference of the documented rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coreg_edge.runtime.image import load_image
from coreg_edge.runtime.metadata import MetadataError
from coreg_edge.runtime.preprocess import PreprocessConfig, preprocess, preprocess_batch, resized_size

torch = pytest.importorskip("torch")

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def reference(
    path: Path, rule: str, size: int, crop: tuple[int, int], mean, std, channels=3, interp="bilinear"
):
    """Written from the docstring, not from the implementation: PIL resize, torch crop and normalise."""
    image = load_image(path, channels)
    w, h = image.size
    if rule == "square":
        target = (size, size)
    elif w <= h:
        target = (size, int(np.floor(h * size / w + 0.5)))
    else:
        target = (int(np.floor(w * size / h + 0.5)), size)
    if image.size != target:
        image = image.resize(target, RESAMPLE[interp])
    t = torch.from_numpy(np.array(image)).float()
    if t.ndim == 2:
        t = t[:, :, None]
    t = t.permute(2, 0, 1) / 255.0
    top = (t.shape[1] - crop[0]) // 2
    left = (t.shape[2] - crop[1]) // 2
    t = t[:, top : top + crop[0], left : left + crop[1]]
    t = (t - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return t.numpy()


def _write_images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8)
    paths = {}
    paths["png"] = folder / "rgb.png"
    Image.fromarray(rgb).save(paths["png"])
    paths["jpeg"] = folder / "photo.jpg"
    Image.fromarray(rgb).save(paths["jpeg"], quality=90)
    rgba = np.concatenate([rgb, rng.integers(0, 256, size=(23, 37, 1), dtype=np.uint8)], axis=2)
    paths["rgba"] = folder / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    paths["palette"] = folder / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(paths["palette"])
    paths["gray"] = folder / "gray.png"
    Image.fromarray(rgb[:, :, 0]).save(paths["gray"])
    paths["tall"] = folder / "tall.png"
    Image.fromarray(rng.integers(0, 256, size=(41, 19, 3), dtype=np.uint8)).save(paths["tall"])
    return paths


CASES = [
    ("square", 16, (16, 16), "bilinear"),
    ("shorter_side", 20, (16, 16), "bilinear"),
    ("shorter_side", 18, (18, 12), "bicubic"),
    ("square", 12, (12, 12), "nearest"),
]


@pytest.mark.parametrize(("rule", "size", "crop", "interp"), CASES)
@pytest.mark.parametrize("kind", ["png", "jpeg", "rgba", "palette", "gray", "tall"])
def test_preprocess_matches_reference(
    tmp_path: Path, kind: str, rule: str, size: int, crop, interp: str
) -> None:
    path = _write_images(tmp_path)[kind]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    config = PreprocessConfig(3, crop, rule, size, interp, crop, mean, std)
    got = preprocess(load_image(path, 3), config)
    want = reference(path, rule, size, crop, mean, std, interp=interp)
    assert got.dtype == np.float32 and got.shape == (3, *crop)
    assert np.abs(got - want).max() <= 1e-5
    # Paths and arrays go through the same decoding: identical tensors.
    assert np.array_equal(preprocess(path, config), got)


def test_grayscale_model(tmp_path: Path) -> None:
    path = _write_images(tmp_path)["png"]
    config = PreprocessConfig.from_overrides(16, (0.5,), (0.2,), channels=1, resize_rule="shorter_side")
    got = preprocess(load_image(path, 1), config)
    assert got.shape == (1, 16, 16)
    assert (
        np.abs(got - reference(path, "shorter_side", 16, (16, 16), (0.5,), (0.2,), channels=1)).max() <= 1e-5
    )
    # An RGB PIL image handed to a 1-channel config is converted, not rejected.
    assert np.array_equal(preprocess(Image.open(path), config), got)


def test_resize_rule_arithmetic() -> None:
    config = PreprocessConfig(3, (5, 5), "shorter_side", 5, "bilinear", (5, 5), (0,) * 3, (1,) * 3)
    assert resized_size(15, 10, config) == (8, 5)  # 7.5 rounds half up
    assert resized_size(10, 25, config) == (5, 13)  # 12.5 -> 13
    assert resized_size(5, 5, config) == (5, 5)
    square = PreprocessConfig(3, (5, 5), "square", 7, "bilinear", (5, 5), (0,) * 3, (1,) * 3)
    assert resized_size(30, 10, square) == (7, 7)


def test_no_resize_when_size_matches() -> None:
    array = np.random.default_rng(1).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    config = PreprocessConfig(3, (16, 16), "square", 16, "bicubic", (16, 16), (0.5,) * 3, (0.25,) * 3)
    want = ((array.astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    assert np.array_equal(preprocess(array, config), want)


def test_batch_and_determinism() -> None:
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, size=(20 + i, 30, 3), dtype=np.uint8) for i in range(3)]
    config = PreprocessConfig.from_overrides(16, (0.5,), (0.25,))
    batch = preprocess_batch(arrays, config)
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == np.float32
    assert np.array_equal(batch, preprocess_batch(arrays, config))
    assert preprocess_batch([], config).shape == (0, 3, 16, 16)


def test_metadata_round_trip() -> None:
    config = PreprocessConfig(
        3, [14, 12], "shorter_side", 16, "bicubic", [14, 12], [0.1, 0.2, 0.3], [1, 2, 3]
    )
    meta = config.to_metadata()
    assert meta == {
        "channels": 3,
        "input_size": [14, 12],
        "resize": {"rule": "shorter_side", "size": 16, "interpolation": "bicubic"},
        "crop": [14, 12],
        "mean": [0.1, 0.2, 0.3],
        "std": [1.0, 2.0, 3.0],
    }
    assert PreprocessConfig.from_metadata(meta) == config
    assert hash(config) == hash(PreprocessConfig.from_metadata(meta))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"resize_rule": "stretch"}, "resize rule"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"mean": (0.5,)}, "mean and std"),
        ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
        ({"resize_size": 8}, "larger than the resize size"),
        ({"crop": (12, 12)}, "must equal"),
        ({"channels": 4}, "channels"),
    ],
)
def test_invalid_config(changes: dict, message: str) -> None:
    fields = {
        "channels": 3,
        "input_size": (16, 16),
        "resize_rule": "square",
        "resize_size": 16,
        "interpolation": "bilinear",
        "crop": (16, 16),
        "mean": (0.5,) * 3,
        "std": (0.25,) * 3,
    }
    with pytest.raises(MetadataError, match=message):
        PreprocessConfig(**{**fields, **changes})
