"""Shared fixtures: a tiny colour classifier exported to ONNX once per session (torch is test-only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASS_NAMES = ("red", "green", "blue", "gray")
COLORS = np.array([(200, 40, 40), (40, 190, 40), (40, 40, 200), (128, 128, 128)], dtype=np.float32)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
SIZE = 16


def color_image(label: int, height: int = SIZE, width: int = SIZE, seed: int = 0) -> np.ndarray:
    """A uint8 HWC image: the class colour plus uniform noise, the same recipe the model trains on."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-35, 35, size=(height, width, 3))
    return np.clip(COLORS[label] + noise, 0, 255).astype(np.uint8)


def metadata(**changes: object) -> dict:
    """The contract's metadata for the tiny model (square resize to 16, no crop margin)."""
    meta = {
        "format_version": 1,
        "class_names": list(CLASS_NAMES),
        "channels": 3,
        "input_size": [SIZE, SIZE],
        "resize": {"rule": "square", "size": SIZE, "interpolation": "bilinear"},
        "crop": [SIZE, SIZE],
        "mean": list(MEAN),
        "std": list(STD),
        "backbone": "tiny-cnn",
        "method": "supervised",
        "peer": "a",
        "annotator": None,
        "coreg_edge_version": "0.1.0",
        "test_accuracy": None,
    }
    meta.update(changes)
    return meta


@dataclass(frozen=True)
class TinyModels:
    with_metadata: Path
    without_metadata: Path
    folder: Path


def _train_and_export(folder: Path) -> TinyModels:
    import onnx
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, len(CLASS_NAMES)),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    for step in range(60):
        labels = torch.arange(32) % len(CLASS_NAMES)
        images = np.stack([color_image(int(k), seed=1000 * step + i) for i, k in enumerate(labels)])
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
        loss = torch.nn.functional.cross_entropy(net(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    plain = folder / "plain.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(plain),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    proto = onnx.load(str(plain))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "coreg_edge", json.dumps(metadata())
    with_meta = folder / "model.onnx"
    onnx.save(proto, str(with_meta))
    return TinyModels(with_metadata=with_meta, without_metadata=plain, folder=folder)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """model.onnx (with coreg_edge metadata) and plain.onnx (without), trained to confident margins."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _train_and_export(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """Eight labelled PNG/JPEG files in nested folders, named after their class."""
    root = tmp_path / "images"
    for i in range(8):
        label = i % len(CLASS_NAMES)
        sub = root / ("a" if i < 4 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        ext = "png" if i % 2 == 0 else "jpg"
        Image.fromarray(color_image(label, 20 + i, 24, seed=i)).save(sub / f"{i}_{CLASS_NAMES[label]}.{ext}")
    return root


# Helpers reach the tests as fixtures: `from conftest import ...` could pick up another folder's conftest.
@pytest.fixture(scope="session")
def class_names() -> tuple[str, ...]:
    return CLASS_NAMES


@pytest.fixture(scope="session", name="color_image")
def color_image_fixture():
    """color_image(label, height=16, width=16, seed=0) -> uint8 HWC."""
    return color_image


@pytest.fixture(scope="session")
def contract_metadata():
    """contract_metadata(**changes) -> the tiny model's metadata dict."""
    return metadata
