"""int8 calibration data: real training images through the runtime's own preprocessing, batch by batch.

The arrays come from the fp32 model's `Classifier.preprocess` (the transform its metadata describes), so
int8 ranges are measured on exactly the tensors a device will feed the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from coreg_edge.exporters.images import Subset, iter_batches
from coreg_edge.runtime.classifier import Classifier
from coreg_edge.utils import progress


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds {"images": float32 (N, C, H, W)} batches, loading lazily so memory stays flat."""

    def __init__(
        self,
        classifier: Classifier,
        subset: Subset,
        batch_size: int = 32,
        quiet: bool = False,
        single: bool = False,
    ):
        """`single`: feed one image at a time. onnxruntime's histogram calibrators (entropy, percentile)
        stack per-batch outputs and fail on a last batch of another size."""
        self.classifier, self.subset, self.batch_size, self.quiet = classifier, subset, batch_size, quiet
        self.single = single
        self.input_name = classifier.loaded.input_name
        self.skipped: list[str] = []
        self.count = 0
        self._batches: Iterator[dict[str, np.ndarray]] | None = None

    def _generate(self) -> Iterator[dict[str, np.ndarray]]:
        bar = progress(None, desc="calibrate", total=len(self.subset), quiet=self.quiet, unit="img")
        with bar:
            for images, _, _ in iter_batches([self.subset], self.batch_size, self.skipped):
                batch = self.classifier.preprocess(images)
                self.count += len(batch)
                bar.update(len(batch))
                for part in np.split(batch, len(batch)) if self.single else [batch]:
                    yield {self.input_name: part}

    def get_next(self) -> dict[str, Any] | None:
        if self._batches is None:
            self._batches = self._generate()
        return next(self._batches, None)

    def rewind(self) -> None:
        """Start again from the first batch (onnxruntime calls this between passes of some methods)."""
        self._batches, self.count = None, 0
