"""ModelSpec: what a model needs beside its weights, one typed object from a run to the device.

    class names   the logits' order
    preprocess    PreprocessConfig: how an image becomes the input tensor (resize, crop, mean, std)
    info          where it came from: backbone, method, peer, annotator, test_accuracy, coreg_edge_version,
                  reject_threshold, and what export adds (format, quantization, ...)

A finished run gives one (`runs.FinishedRun.spec`), the exporter writes it into each file as the `coreg_edge`
metadata (`to_metadata`), and the runtime reads it back (`from_metadata`, after the user's overrides):
`Classifier(...).spec`. Its JSON form is the metadata contract, docs/FORMATS.md#onnx-model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coreg_edge import __version__
from coreg_edge.runtime.metadata import METADATA_FORMAT_VERSION, MetadataError
from coreg_edge.runtime.preprocess import PreprocessConfig

#: The info keys every exported file carries, in this order (null when unknown), before any other.
INFO_KEYS = ("backbone", "method", "peer", "annotator", "test_accuracy")
#: The metadata keys that are the preprocessing (PreprocessConfig.to_metadata), not info.
PREPROCESS_KEYS = ("channels", "input_size", "resize", "crop", "mean", "std")


@dataclass(frozen=True)
class ModelSpec:
    """Class names, preprocessing and provenance of one model; to and from its metadata JSON."""

    class_names: tuple[str, ...]
    preprocess: PreprocessConfig
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "info", dict(self.info))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def with_info(self, **info: Any) -> ModelSpec:
        """The same model with more (or other) provenance, e.g. the peer chosen or the int8 settings."""
        return dataclasses.replace(self, info={**self.info, **info})

    def to_metadata(self) -> dict[str, Any]:
        """The contract's JSON object: format_version, class_names, the preprocessing keys, the info keys
        (INFO_KEYS first, null when absent, then coreg_edge_version, then the rest in the order given)."""
        info = dict(self.info)
        meta: dict[str, Any] = {"format_version": METADATA_FORMAT_VERSION, "class_names": list(self.class_names)}
        meta.update(self.preprocess.to_metadata())
        for key in INFO_KEYS:
            meta[key] = info.pop(key, None)
        meta["coreg_edge_version"] = info.pop("coreg_edge_version", __version__)
        meta.update(info)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> ModelSpec:
        """From complete metadata (a file's, resolved with the user's overrides: runtime.metadata.
        resolve_metadata); everything that is neither class names nor preprocessing is info."""
        names = meta.get("class_names") or ()  # none: a bench of a file without names needs none
        if not isinstance(names, Sequence) or isinstance(names, str):
            raise MetadataError(f"class_names must be a list of names (got {names!r})")
        skip = {"format_version", "class_names", *PREPROCESS_KEYS}
        info = {key: value for key, value in meta.items() if key not in skip}
        return cls(tuple(str(name) for name in names), PreprocessConfig.from_metadata(meta), info)


def make_metadata(class_names: Sequence[str], preprocess: PreprocessConfig, **info: Any) -> dict[str, Any]:
    """The exporter's side of the contract: ModelSpec(class_names, preprocess, info).to_metadata()."""
    return ModelSpec(tuple(class_names), preprocess, info).to_metadata()
