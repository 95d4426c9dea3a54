"""Image sources: what DATA names. A source is a list of item ids, labels (-1 unknown) and a reader.

Sources read images lazily by index; decoding errors surface as ImageDecodeError so callers can skip
(and list) the item, or fail with --strict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from coreg_edge.errors import UserError
from coreg_edge.runtime.image import IMAGE_EXTENSIONS, convert_mode, find_images, load_image


class ImageSource:
    """Base class: `item_ids`, `labels` (int64, -1 unknown), `class_names` (None when unlabeled)."""

    item_ids: list[str]
    labels: np.ndarray
    class_names: list[str] | None
    channels: int
    kind: str  # "folder" or "builtin"
    root: str
    split: str | None
    #: True when reading an item may fail (files on disk); in-memory arrays never do.
    can_fail: bool = False
    #: What indices_of() advises when annotated items are missing: reopen() sets it to fit how the source was
    #: found (where it was recorded: pass --data; where --data said: that folder is not the one, or lost some).
    missing_advice: str = "did the data move? pass --data with its new location"

    def __len__(self) -> int:
        return len(self.item_ids)

    def load(self, index: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def has_labels(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def describe(self) -> dict[str, Any]:
        """The `data` block of an annotation file: enough to reopen this source later."""
        return {"source": self.kind, "root": self.root, "split": self.split, "channels": self.channels}

    def indices_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """Map item ids (e.g. from an annotation file) back to indices; unknown ids are a user error."""
        lookup = {item: i for i, item in enumerate(self.item_ids)}
        missing = [item for item in item_ids if item not in lookup]
        if missing:
            raise UserError(
                f"{len(missing)} annotated item(s) are not in {self.root} (first: {missing[0]}); "
                f"{self.missing_advice}"
            )
        return np.asarray([lookup[item] for item in item_ids], dtype=np.int64)


class FolderSource(ImageSource):
    """An image folder: flat (unlabeled) or one sub-folder per class (labels used only for evaluation)."""

    kind = "folder"
    can_fail = True

    def __init__(self, root: str | Path, channels: int = 3):
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"{root}: not a folder")
        self.root = str(root.resolve())
        self.split = None
        self.channels = channels
        top_images = sorted(
            p
            for p in root.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.name[0] != "."
        )
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        class_dirs = [d for d in class_dirs if find_images(d)]
        if class_dirs and top_images:
            raise UserError(
                f"{root}: has both images ({top_images[0].name}, ...) and class sub-folders "
                f"({class_dirs[0].name}, ...); use one layout: flat, or one sub-folder per class"
            )
        paths: list[Path] = []
        labels: list[int] = []
        if class_dirs:
            self.class_names = [d.name for d in class_dirs]
            for label, class_dir in enumerate(class_dirs):
                found = find_images(class_dir)
                paths += found
                labels += [label] * len(found)
        else:
            self.class_names = None
            paths = top_images
            labels = [-1] * len(paths)
        if not paths:
            raise UserError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self._paths = paths
        self.item_ids = [p.relative_to(root).as_posix() for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)

    def load(self, index: int) -> Image.Image:
        return load_image(self._paths[index], self.channels)

    def path(self, index: int) -> Path:
        return self._paths[index]


class ArraySource(ImageSource):
    """Images held in memory as uint8 arrays (N, H, W) or (N, H, W, 3): built-ins like digits."""

    kind = "builtin"

    def __init__(
        self,
        name: str,
        split: str,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: list[str],
        channels: int = 3,
    ):
        self.root = name
        self.split = split
        self.channels = channels
        self._images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.item_ids = [f"{name}:{split}/{i}" for i in range(len(images))]

    def load(self, index: int) -> Image.Image:
        return convert_mode(Image.fromarray(self._images[index]), self.channels)


class DatasetSource(ImageSource):
    """A torchvision dataset (already on disk) read item by item, without transforms."""

    kind = "builtin"

    def __init__(
        self, name: str, split: str, dataset: Any, labels: np.ndarray, class_names: list[str], channels: int
    ):
        self.root = name
        self.split = split
        self.channels = channels
        self._dataset = dataset
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.item_ids = [f"{name}:{split}/{i}" for i in range(len(self.labels))]
        self._index = np.arange(len(self.labels))

    def select(self, positions: np.ndarray) -> DatasetSource:
        """A fixed subset (EuroSAT has no official split): ids keep the split name."""
        self._index = np.asarray(positions)
        self.labels = self.labels[self._index]
        self.item_ids = [f"{self.root}:{self.split}/{i}" for i in range(len(self._index))]
        return self

    def load(self, index: int) -> Image.Image:
        image = self._dataset[int(self._index[index])][0]
        return convert_mode(image, self.channels)
