"""Built-in datasets as plain data (timm style): digits (offline) and the paper's torchvision sets.

Every fact about a dataset is a field of its `DatasetInfo` row: how it is read (`reader`, `split_argument`,
`labels`), whether it has an official split (`fixed_split`), its strong view (`strong_augment`). One generic
opener (`open_builtin`) reads the row; no code branches on a dataset's name, and adding one is one row.
Torchvision sets are read from a cache folder and downloaded only when asked (`--download`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge import errors
from coreg_edge.data.sources import ArraySource, DatasetSource, ImageSource
from coreg_edge.errors import UserError
from coreg_edge.utils import resolve_function

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


def _tensor_targets(dataset: Any) -> Any:
    return dataset.targets.numpy()  # FashionMNIST keeps its labels as a torch tensor


def _sample_labels(dataset: Any) -> list[int]:
    return [label for _, label in dataset._samples]  # GTSRB: (path, label) pairs, no label attribute


#: How a dataset's labels are read, by the name a row's `labels` gives; any other name is an attribute.
LABEL_READERS: dict[str, Callable[[Any], Any]] = {
    "tensor_targets": _tensor_targets,
    "sample_labels": _sample_labels,
}

#: How a torchvision constructor is told the split: `train=bool`, `split="train"|"test"`, or not at all.
SPLIT_ARGUMENTS = ("train", "split", None)
STRONG_AUGMENTS = ("randaugment", "cutout")


@dataclass(frozen=True)
class DatasetInfo:
    """What opening, training and export need to know about a built-in dataset (spec sections 1 and 6)."""

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
    # A torchvision.datasets class name ("CIFAR10"), or "module:function" for the dataset's own loader:
    # () -> (uint8 images (N, H, W) or (N, H, W, 3), labels) of the whole set, held in memory.
    reader: str = ""
    split_argument: str | None = "train"  # "train": train=bool; "split": split="train"|"test"; None: neither
    labels: str = "targets"  # a LABEL_READERS name, else the attribute that holds the labels
    fixed_split: bool = False  # no official split: a fixed, seeded 80/20 of the whole set (_fixed_split)
    strong_augment: str = "randaugment"  # the strong view: "randaugment", or "cutout" (the reference's)

    def __post_init__(self) -> None:
        if not self.reader:
            raise ValueError(f"no reader for built-in dataset {self.name}")
        if self.split_argument not in SPLIT_ARGUMENTS:
            raise ValueError(f"dataset {self.name!r}: split_argument must be one of {SPLIT_ARGUMENTS}")
        if self.strong_augment not in STRONG_AUGMENTS:
            raise ValueError(f"dataset {self.name!r}: strong_augment must be one of {STRONG_AUGMENTS}")
        if self.own_loader and not self.class_names:
            raise ValueError(f"dataset {self.name!r}: a loader of its own needs class_names in the row")

    @property
    def own_loader(self) -> bool:
        """The reader is a "module:function" loader of the whole set, not a torchvision class."""
        return ":" in self.reader

    def prompt_names(self, class_names: list[str]) -> list[str]:
        return [self.clip_format.format(name) for name in class_names]


_HERE = "coreg_edge.data.builtin"
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("digits", 3, 8, (0.5,) * 3, (0.5,) * 3, flip=False, class_names=tuple(DIGIT_CLASSES),
                    clip_format="the number {}", needs_download=False, reader=f"{_HERE}:load_digits_arrays",
                    split_argument=None, fixed_split=True),
        DatasetInfo("cifar10", 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), flip=True,
                    class_names=tuple(CIFAR10_CLASSES), reader="CIFAR10"),
        DatasetInfo("cifar100", 3, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), flip=True,
                    reader="CIFAR100"),
        DatasetInfo("svhn", 3, 32, (0.5,) * 3, (0.5,) * 3, flip=False, class_names=tuple(DIGIT_CLASSES),
                    clip_format="number {}", reader="SVHN", split_argument="split", labels="labels"),
        DatasetInfo("fmnist", 1, 28, (0.1307,), (0.3081,), flip=True, class_names=tuple(FMNIST_CLASSES),
                    reader="FashionMNIST", labels="tensor_targets", strong_augment="cutout"),
        DatasetInfo("eurosat", 3, 64, (0.5,) * 3, (0.5,) * 3, flip=True, class_names=tuple(EUROSAT_CLASSES),
                    reader="EuroSAT", split_argument=None, fixed_split=True),
        DatasetInfo("gtsrb", 3, 64, (0.5,) * 3, (0.5,) * 3, flip=False, class_names=tuple(GTSRB_CLASSES),
                    clip_format="German Traffic Sign: {}", reader="GTSRB", split_argument="split",
                    labels="sample_labels"),
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


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, all 1797, as uint8 images (0-16 scaled to 0-255) and labels."""
    from sklearn.datasets import load_digits  # lazy: optional dependency (train extra), slow import

    bunch = load_digits()
    return np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8), bunch.target


def read_labels(dataset: Any, how: str) -> Any:
    """A dataset's labels as its row says: a LABEL_READERS function, else the attribute named `how`."""
    reader = LABEL_READERS.get(how)
    return reader(dataset) if reader is not None else getattr(dataset, how)


def split_kwargs(info: DatasetInfo, split: str) -> dict[str, Any]:
    """How the row's torchvision constructor is told the split."""
    if info.split_argument == "train":
        return {"train": split == "train"}
    if info.split_argument == "split":
        return {"split": split}
    return {}


def open_builtin(name: str, split: str, channels: int, data_dir: Path, download: bool) -> ImageSource:
    """Open the built-in dataset `name` as its row says; torchvision sets come from `data_dir`, downloaded
    only when `download` is true."""
    info = DATASETS[name]
    if info.own_loader:
        images, labels = resolve_function(info.reader)()
        if info.fixed_split:
            keep = _fixed_split(len(labels), split)
            images, labels = images[keep], labels[keep]
        return ArraySource(name, split, images, labels, list(info.class_names or ()), channels=channels)
    source = open_torchvision(info, split, channels, data_dir, download)
    if info.fixed_split:  # no official split: a fixed, seeded 80/20 (the reference code's was unseeded)
        source.select(_fixed_split(len(source.labels), split))
    return source


def open_torchvision(
    info: DatasetInfo, split: str, channels: int, data_dir: Path, download: bool
) -> DatasetSource:
    """The row's torchvision dataset, whole (open_builtin applies a fixed split), from `data_dir`."""
    name = info.name
    datasets = errors.require("torchvision.datasets", f"the built-in dataset {name}")
    root = data_dir / name
    try:
        ds = getattr(datasets, info.reader)(root, **split_kwargs(info, split), download=download)
        labels = read_labels(ds, info.labels)
    except RuntimeError as exc:
        if download:
            raise UserError(f"could not download {name} into {root} ({exc}); check the network") from exc
        raise UserError(
            f"{name} is not in {root}; add --download to fetch it (needs network), "
            "or set COREG_EDGE_DATA / --data-dir to where it already is"
        ) from exc
    except OSError as exc:  # URLError, connection refused, DNS failures
        raise UserError(f"could not download {name} into {root}: {exc}; check the network") from exc
    class_names = list(info.class_names) if info.class_names else list(ds.classes)
    return DatasetSource(name, split, ds, np.asarray(labels), class_names, channels)
