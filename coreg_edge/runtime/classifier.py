"""`Classifier`: an exported model on a device; images in, top-k classes with probabilities out."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from coreg_edge.errors import UserError
from coreg_edge.runtime.image import to_pil
from coreg_edge.runtime.metadata import MetadataOverrides, named_value
from coreg_edge.runtime.preprocess import ImageLike, PreprocessConfig, preprocess, preprocess_batch
from coreg_edge.runtime.session import LoadedModel, load_model
from coreg_edge.runtime.spec import ModelSpec


@dataclass(frozen=True)
class TopClass:
    """One ranked class: its name, its index in the model's output, its softmax probability."""

    label: str
    index: int
    prob: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "index": self.index, "prob": self.prob}


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, best first; or the reason the image could not be classified."""

    top: tuple[TopClass, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        """The top-1 label (raises for a failed item)."""
        return self._first().label

    @property
    def index(self) -> int:
        return self._first().index

    @property
    def prob(self) -> float:
        return self._first().prob

    def _first(self) -> TopClass:
        if self.error is not None:
            raise UserError(self.error)
        return self.top[0]

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON shape without the path: {"top": [...]} or {"error": ...}."""
        if self.error is not None:
            return {"error": self.error}
        return {"top": [entry.to_dict() for entry in self.top]}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _as_items(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    """One image (path, PIL, HW/HWC array) or many (iterable, or an (N, H, W[, C]) array) -> a list."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def _without_path(message: str, item: object) -> str:
    """Per-item errors sit next to their path already: drop the "PATH: " prefix decoding errors carry."""
    prefix = f"{item}: " if isinstance(item, (str, os.PathLike)) else ""
    return message[len(prefix) :] if prefix and message.startswith(prefix) else message


class Classifier:
    """Run an exported `.onnx` with onnxruntime only (no torch): preprocess, batch, softmax, top-k.

    The preprocessing comes from the model's `coreg_edge` metadata, so a device computes the same input
    tensor training evaluated on. For an ONNX without that metadata, pass class_names / input_size / mean /
    std (the CLI's --classes / --input-size / --mean / --std). `providers` defaults to CPU; `threads` to the
    physical cores available. A rejected export (NAME.rejected: it failed its parity check) opens with a
    warning saying why. `caller` says how errors name the settings: "python" (keywords, `threads=`) or
    "cli" (flags, `--threads`; what `coreg-edge predict` passes).
    """

    caller = "python"  # how errors name the settings (the instance's, set by __init__ and from_loaded)

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        threads: int | None = None,
        providers: str | Sequence[str] | None = None,
        class_names: str | Sequence[str] | None = None,
        input_size: int | str | Sequence[int] | None = None,
        mean: float | str | Sequence[float] | None = None,
        std: float | str | Sequence[float] | None = None,
        batch_size: int = 32,
        caller: str = "python",
    ) -> None:
        self.caller = caller
        self.batch_size = self._check_batch_size(batch_size)
        overrides = MetadataOverrides.parse(class_names, input_size, mean, std, caller=caller)
        self._model: LoadedModel = load_model(
            model, threads=threads, providers=providers, overrides=overrides, caller=caller
        )
        self.class_names: tuple[str, ...] = self._model.spec.class_names

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, batch_size: int = 32, caller: str = "python") -> Classifier:
        """Wrap an already opened model (bench and parity checks share one session this way)."""
        self = cls.__new__(cls)
        self.caller = caller
        self._model, self.batch_size = loaded, self._check_batch_size(batch_size)
        self.class_names = loaded.spec.class_names
        return self

    def _check_batch_size(self, size: object) -> int:
        """A batch size >= 1, named as the caller spells it (batch_size= or --batch-size)."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise UserError(f"{named_value('batch_size', size, self.caller)}: must be a whole number >= 1")
        return int(size)

    def _check_topk(self, topk: object) -> int:
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
            raise UserError(f"{named_value('topk', topk, self.caller)}: must be a whole number >= 1")
        return int(topk)

    # --- what the model is ---------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._model.path

    @property
    def metadata(self) -> dict[str, Any]:
        """The resolved metadata (the file's, completed by overrides)."""
        return self._model.metadata

    @property
    def spec(self) -> ModelSpec:
        """Class names, preprocessing and provenance (backbone, method, peer, ...), typed."""
        return self._model.spec

    @property
    def config(self) -> PreprocessConfig:
        """The preprocessing (spec.preprocess)."""
        return self._model.config

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def provider(self) -> str:
        return self._model.provider

    @property
    def threads(self) -> int:
        return self._model.threads

    @property
    def session(self) -> Any:
        """The onnxruntime InferenceSession."""
        return self._model.session

    @property
    def loaded(self) -> LoadedModel:
        return self._model

    # --- running it ----------------------------------------------------------------------------------
    def preprocess(self, images: ImageLike | Iterable[ImageLike]) -> np.ndarray:
        """float32 (N, C, H, W) exactly as fed to the model."""
        return preprocess_batch(_as_items(images), self.config)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits for an already preprocessed (N, C, H, W) batch."""
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.config.shape:
            raise UserError(
                f"expected a (N, {', '.join(map(str, self.config.shape))}) batch, got {batch.shape}"
            )
        logits = self._model.run(batch)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise UserError(
                f"{self.path}: the model returned logits of shape {logits.shape} for {self.num_classes} class names"
            )
        return logits

    def probabilities(
        self, images: ImageLike | Iterable[ImageLike], batch_size: int | None = None
    ) -> np.ndarray:
        """Softmax probabilities, float32 (N, num_classes), in input order."""
        items = _as_items(images)
        size = self._check_batch_size(self.batch_size if batch_size is None else batch_size)
        chunks = [
            softmax(self.logits(self.preprocess(items[i : i + size]))) for i in range(0, len(items), size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_classes), dtype=np.float32)

    def top(self, probs: np.ndarray, topk: int = 5) -> list[Prediction]:
        """Rank each row of probabilities; ties keep the lower class index first."""
        k = min(self._check_topk(topk), self.num_classes)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            Prediction(tuple(TopClass(self.class_names[j], int(j), float(row[j])) for j in idx))
            for row, idx in zip(probs, order, strict=True)
        ]

    def predict(
        self, images: ImageLike | Iterable[ImageLike], topk: int = 5, batch_size: int | None = None
    ) -> list[Prediction]:
        """Top-k for each image, in input order; an undecodable image raises ImageDecodeError."""
        return list(self.iter_predict(images, topk=topk, batch_size=batch_size))

    def predict_one(self, image: ImageLike, topk: int = 5) -> Prediction:
        """Top-k for a single image."""
        return self.predict([image], topk=topk)[0]

    def iter_predict(
        self,
        images: ImageLike | Iterable[ImageLike],
        topk: int = 5,
        batch_size: int | None = None,
        skip_errors: bool = False,
    ) -> Iterator[Prediction]:
        """Yield predictions in input order, decoding one batch at a time (memory stays flat).

        With skip_errors, an item that cannot be decoded yields Prediction(error=...) and the rest go on.
        """
        self._check_topk(topk)
        items = images if isinstance(images, Iterator) else iter(_as_items(images))
        size = self._check_batch_size(self.batch_size if batch_size is None else batch_size)
        while True:
            chunk = list(itertools.islice(items, size))
            if not chunk:
                return
            slots: list[Prediction | None] = [None] * len(chunk)
            arrays: list[np.ndarray] = []
            positions: list[int] = []
            for position, item in enumerate(chunk):
                try:
                    arrays.append(preprocess(to_pil(item, self.config.channels), self.config))
                    positions.append(position)
                except UserError as exc:
                    if not skip_errors:
                        raise
                    slots[position] = Prediction(error=_without_path(str(exc), item))
            if arrays:
                for position, prediction in zip(
                    positions, self.top(softmax(self.logits(np.stack(arrays))), topk), strict=True
                ):
                    slots[position] = prediction
            yield from (slot for slot in slots if slot is not None)

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, classes={self.num_classes}, provider={self.provider!r})"
