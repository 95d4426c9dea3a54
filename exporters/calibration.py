"""int8 calibration data: real training images through the runtime's own preprocessing.

The arrays come from the fp32 model's `Classifier.preprocess` (the transform its metadata describes), so
int8 ranges are measured on exactly the tensors a device will feed the model. They are decoded once
(`preprocess_calibration`, into a .npy file) and fed to every quantization attempt by `ArrayCalibrationReader`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from coreg_edge.exporters.images import Subset, iter_batches
from coreg_edge.runtime.classifier import Classifier
from coreg_edge.utils import progress


class CalibrationImages:
    """The preprocessed calibration images (a memory map) and what was skipped on the way."""

    def __init__(self, array: np.ndarray, skipped: list[str]):
        self.array, self.skipped = array, skipped

    @property
    def count(self) -> int:
        return len(self.array)


def preprocess_calibration(
    classifier: Classifier,
    subset: Subset,
    path: str | os.PathLike[str],
    batch_size: int = 32,
    quiet: bool = False,
    desc: str = "calibrate",
) -> CalibrationImages:
    """Decode and preprocess `subset` once into the .npy file `path`; unreadable images are skipped."""
    skipped: list[str] = []
    stored: np.ndarray | None = None
    filled = 0
    with progress(None, desc=desc, total=len(subset), quiet=quiet, unit="img") as bar:
        for images, _, _ in iter_batches([subset], batch_size, skipped):
            batch = classifier.preprocess(images)
            if stored is None:
                shape = (len(subset), *batch.shape[1:])
                stored = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            stored[filled : filled + len(batch)] = batch
            filled += len(batch)
            bar.update(len(batch))
    array = np.zeros((0, *classifier.config.shape), np.float32) if stored is None else stored[:filled]
    return CalibrationImages(array, skipped)


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds {input name: float32 (N, C, H, W)} batches of preprocessed images to onnxruntime.

    `single`: one image at a time. onnxruntime's histogram calibrators (entropy, percentile) stack the
    per-batch outputs and fail on a last batch of another size."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 32, single: bool = False):
        self.images, self.input_name = images, input_name
        self.batch_size = 1 if single else batch_size
        self.start = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.start >= len(self.images):
            return None
        batch = np.ascontiguousarray(self.images[self.start : self.start + self.batch_size])
        self.start += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first batch (onnxruntime calls this between passes of some methods)."""
        self.start = 0
