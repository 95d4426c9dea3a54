"""Built-in datasets as plain data (timm style): digits (offline) and the paper's torchvision sets.

Torchvision sets are read from a cache folder and downloaded only when asked (`--download`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coreg_edge.data.sources import ArraySource, DatasetSource, ImageSource
from coreg_edge.errors import UserError

GTSRB_CLASSES = [
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead",
    "Turn left ahead", "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
]  # fmt: skip

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
EUROSAT_CLASSES = [
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
    "Residential", "River", "SeaLake",
]  # fmt: skip
DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass(frozen=True)
class DatasetInfo:
    """What training and export need to know about a built-in dataset (spec sections 1 and 6)."""

    name: str
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips are label-preserving (not for digits, house numbers, signs)
    splits: tuple[str, ...] = ("train", "test")
    class_names: tuple[str, ...] | None = None  # None: read from the dataset (CIFAR-100)
    clip_format: str = "{}"  # dataset-specific wording of a class in prompts
    needs_download: bool = True
    extra: dict = field(default_factory=dict)

    def prompt_names(self, class_names: list[str]) -> list[str]:
        return [self.clip_format.format(name) for name in class_names]


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("digits", 3, 8, (0.5,) * 3, (0.5,) * 3, flip=False, class_names=tuple(DIGIT_CLASSES),
                    clip_format="the number {}", needs_download=False),
        DatasetInfo("cifar10", 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), flip=True,
                    class_names=tuple(CIFAR10_CLASSES)),
        DatasetInfo("cifar100", 3, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), flip=True),
        DatasetInfo("svhn", 3, 32, (0.5,) * 3, (0.5,) * 3, flip=False, class_names=tuple(DIGIT_CLASSES),
                    clip_format="number {}"),
        DatasetInfo("fmnist", 1, 28, (0.1307,), (0.3081,), flip=True, class_names=tuple(FMNIST_CLASSES)),
        DatasetInfo("eurosat", 3, 64, (0.5,) * 3, (0.5,) * 3, flip=True, class_names=tuple(EUROSAT_CLASSES)),
        DatasetInfo("gtsrb", 3, 64, (0.5,) * 3, (0.5,) * 3, flip=False, class_names=tuple(GTSRB_CLASSES),
                    clip_format="German Traffic Sign: {}"),
    ]
}  # fmt: skip

DIGITS_TRAIN_SHARE = 0.8  # fixed 80/20 split, seed 0: never the user's seed, so test items never leak
SPLIT_SEED = 0


def default_data_dir() -> Path:
    return Path(os.environ.get("COREG_EDGE_DATA", Path.home() / ".cache" / "coreg-edge" / "datasets"))


def parse_builtin(spec: str) -> tuple[str, str] | None:
    """'cifar10:test' -> ('cifar10', 'test'); 'digits' -> ('digits', 'train'); None if not a built-in."""
    name, _, split = spec.partition(":")
    name = name.lower()
    if name not in DATASETS:
        return None
    split = split or "train"
    if split not in DATASETS[name].splits:
        raise UserError(f"{spec}: unknown split {split!r}; use {name}:train or {name}:test")
    return name, split


def _fixed_split(n: int, split: str) -> np.ndarray:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    cut = int(n * DIGITS_TRAIN_SHARE)
    return np.sort(order[:cut] if split == "train" else order[cut:])


def open_digits(split: str, channels: int) -> ImageSource:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = _fixed_split(len(bunch.target), split)
    images = np.round(bunch.images[idx] * (255.0 / 16.0)).astype(np.uint8)
    return ArraySource("digits", split, images, bunch.target[idx], DIGIT_CLASSES, channels=channels)


def open_torchvision(name: str, split: str, channels: int, data_dir: Path, download: bool) -> ImageSource:
    """Open a torchvision dataset from `data_dir`, downloading only when `download` is true."""
    from coreg_edge.errors import require

    datasets = require("torchvision.datasets", f"the built-in dataset {name}")
    root = data_dir / name
    train = split == "train"
    try:
        if name == "cifar10":
            ds = datasets.CIFAR10(root, train=train, download=download)
            labels = ds.targets
        elif name == "cifar100":
            ds = datasets.CIFAR100(root, train=train, download=download)
            labels = ds.targets
        elif name == "svhn":
            ds = datasets.SVHN(root, split=split, download=download)
            labels = ds.labels
        elif name == "fmnist":
            ds = datasets.FashionMNIST(root, train=train, download=download)
            labels = ds.targets.numpy()
        elif name == "eurosat":
            ds = datasets.EuroSAT(root, download=download)
            labels = ds.targets
        elif name == "gtsrb":
            ds = datasets.GTSRB(root, split=split, download=download)
            labels = [label for _, label in ds._samples]
        else:  # pragma: no cover - DATASETS and this list move together
            raise UserError(f"no reader for built-in dataset {name}")
    except RuntimeError as exc:
        if download:
            raise UserError(f"could not download {name} into {root} ({exc}); check the network") from exc
        raise UserError(
            f"{name} is not in {root}; add --download to fetch it (needs network), "
            "or set COREG_EDGE_DATA / --data-dir to where it already is"
        ) from exc
    except OSError as exc:  # URLError, connection refused, DNS failures
        raise UserError(f"could not download {name} into {root}: {exc}; check the network") from exc
    info = DATASETS[name]
    class_names = list(info.class_names) if info.class_names else list(ds.classes)
    source = DatasetSource(name, split, ds, np.asarray(labels), class_names, channels)
    if name == "eurosat":  # no official split: a fixed, seeded 80/20 (the reference code's was unseeded)
        source.select(_fixed_split(len(source.labels), split))
    return source
