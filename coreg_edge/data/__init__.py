"""The data layer: DATA strings (folders or built-in names) -> ImageSource."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coreg_edge.data.builtin import DATASETS, DatasetInfo, default_data_dir, open_builtin, parse_builtin
from coreg_edge.data.sources import FolderSource, ImageSource
from coreg_edge.errors import UserError
from coreg_edge.runtime.image import set_max_image_pixels

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "FolderSource",
    "ImageSource",
    "absolute_data",
    "dataset_info",
    "open_source",
    "reopen",
]


def open_source(
    data: str,
    *,
    download: bool = False,
    data_dir: str | Path | None = None,
    channels: int | None = None,
) -> ImageSource:
    """Open DATA: an image folder, or a built-in name such as `digits`, `digits:test`, `cifar10:train`.

    `channels` defaults to the dataset's own (1 for fmnist, else 3).
    """
    builtin = parse_builtin(data)
    path = Path(data).expanduser()
    if builtin is not None and not path.exists():
        name, split = builtin
        channels = channels or DATASETS[name].channels
        return open_builtin(name, split, channels, Path(data_dir or default_data_dir()), download)
    if path.is_dir():
        return FolderSource(path, channels=channels or 3)
    if path.exists():
        raise UserError(
            f"{data}: is a file; DATA must be an image folder or a built-in name ({', '.join(DATASETS)})"
        )
    raise UserError(f"{data}: no such folder, and not a built-in dataset ({', '.join(DATASETS)})")


def reopen(
    block: Mapping[str, Any] | str,
    data: str | None = None,
    *,
    download: bool = False,
    option: str = "--data",
) -> tuple[ImageSource, str]:
    """Open recorded images again: a data block ({source, root, split, channels}, as
    `ImageSource.describe()` records it) or a DATA string; `data` is where they are now, when they moved.
    Returns (source, the DATA it was opened as). The one way every stage finds its images again."""
    if isinstance(block, str):
        block = {"root": block, "source": None}
    if block.get("max_image_pixels"):  # annotated with a raised limit: decode them under the same one
        set_max_image_pixels(int(block["max_image_pixels"]))
    recorded = data is None
    if recorded:
        if block.get("source") == "builtin":
            data = f"{block['root']}:{block.get('split') or 'train'}"
        else:
            data = block.get("root")
        if not data:
            raise UserError(f"the recorded data names no images; pass {option}")
    try:
        source = open_source(str(data), download=download, channels=block.get("channels"))
    except UserError as exc:
        if not recorded:
            raise
        raise UserError(f"{exc} (the images recorded earlier; if they moved, pass {option})") from exc
    if recorded:
        source.missing_advice = f"did the images move? pass {option} with their new location"
    else:  # the user's own answer to "where are they now": telling them to pass it again would not help
        source.missing_advice = (
            f"{option} {data} does not hold all the annotated images: some were deleted or renamed, "
            "or it is another folder"
        )
    return source, str(data)


def absolute_data(data: str | None) -> str | None:
    """DATA with a folder made absolute (a run resumed or exported from another directory finds it);
    built-in names stay as they are."""
    if data is None:
        return None
    path = Path(data).expanduser()
    return str(path.resolve()) if path.is_dir() else data


def dataset_info(source: ImageSource) -> DatasetInfo | None:
    """The built-in dataset's plain-data description, or None for image folders."""
    return DATASETS.get(source.root) if source.kind == "builtin" else None
