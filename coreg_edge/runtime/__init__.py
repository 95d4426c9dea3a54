"""The device side: numpy + onnxruntime + pillow only (no torch, timm, open_clip or onnx).

Preprocessing, decoding and metadata import without onnxruntime (training's data loaders use them); the
onnxruntime parts (`Classifier`, `run_bench`, sessions) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coreg_edge.runtime.image import IMAGE_EXTENSIONS, ImageDecodeError, find_images, load_image, to_pil
from coreg_edge.runtime.metadata import (
    METADATA_FORMAT_VERSION,
    METADATA_KEY,
    MetadataError,
    MetadataOverrides,
    MissingMetadataError,
    ModelError,
    ModelNotFoundError,
    NotOnnxError,
)
from coreg_edge.runtime.preprocess import PreprocessConfig, preprocess, preprocess_batch
from coreg_edge.runtime.spec import ModelSpec, make_metadata
from coreg_edge.utils import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover
    from coreg_edge.runtime.bench import BenchReport, format_report, run_bench
    from coreg_edge.runtime.classifier import Classifier, Prediction, TopClass, softmax
    from coreg_edge.runtime.session import available_providers, load_model, open_session

_LAZY = {
    "Classifier": "classifier",
    "Prediction": "classifier",
    "TopClass": "classifier",
    "softmax": "classifier",
    "BenchReport": "bench",
    "run_bench": "bench",
    "format_report": "bench",
    "available_providers": "session",
    "load_model": "session",
    "open_session": "session",
}

__all__ = [
    "IMAGE_EXTENSIONS",
    "METADATA_FORMAT_VERSION",
    "METADATA_KEY",
    "BenchReport",
    "Classifier",
    "ImageDecodeError",
    "MetadataError",
    "MetadataOverrides",
    "MissingMetadataError",
    "ModelError",
    "ModelSpec",
    "ModelNotFoundError",
    "NotOnnxError",
    "Prediction",
    "PreprocessConfig",
    "TopClass",
    "available_providers",
    "find_images",
    "format_report",
    "load_image",
    "load_model",
    "make_metadata",
    "open_session",
    "preprocess",
    "preprocess_batch",
    "run_bench",
    "softmax",
    "to_pil",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
