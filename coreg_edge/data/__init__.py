"""The data layer: DATA strings (folders or built-in names) -> ImageSource."""

from __future__ import annotations

from pathlib import Path

from coreg_edge.data.builtin import DATASETS, DatasetInfo, default_data_dir, parse_builtin
from coreg_edge.data.sources import FolderSource, ImageSource
from coreg_edge.errors import UserError

__all__ = ["DATASETS", "DatasetInfo", "FolderSource", "ImageSource", "open_source", "dataset_info"]


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
        if name == "digits":
            from coreg_edge.data.builtin import open_digits

            return open_digits(split, channels)
        from coreg_edge.data.builtin import open_torchvision

        return open_torchvision(name, split, channels, Path(data_dir or default_data_dir()), download)
    if path.is_dir():
        return FolderSource(path, channels=channels or 3)
    if path.exists():
        raise UserError(
            f"{data}: is a file; DATA must be an image folder or a built-in name ({', '.join(DATASETS)})"
        )
    raise UserError(f"{data}: no such folder, and not a built-in dataset ({', '.join(DATASETS)})")


def dataset_info(source: ImageSource) -> DatasetInfo | None:
    """The built-in dataset's plain-data description, or None for image folders."""
    return DATASETS.get(source.root) if source.kind == "builtin" else None
