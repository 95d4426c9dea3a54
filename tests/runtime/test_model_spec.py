"""ModelSpec: one typed object (class names, preprocessing, provenance) from a run to the device; its JSON
form is the metadata contract (docs/FORMATS.md#onnx-model)."""

from __future__ import annotations

import json

import pytest

from coreg_edge.runtime import Classifier, MetadataError, ModelSpec, PreprocessConfig
from coreg_edge.runtime.metadata import dumps_metadata


def test_to_metadata_keeps_the_contracts_key_order(class_names, contract_metadata) -> None:
    pre = PreprocessConfig.from_metadata(contract_metadata())
    spec = ModelSpec(class_names, pre, {"reject_threshold": 0.4, "peer": "b", "backbone": "tiny-cnn"})
    meta = spec.to_metadata()
    assert list(meta) == [
        "format_version", "class_names", "channels", "input_size", "resize", "crop", "mean", "std",
        "backbone", "method", "peer", "annotator", "test_accuracy", "coreg_edge_version", "reject_threshold",
    ]  # fmt: skip
    assert meta["peer"] == "b" and meta["method"] is None and meta["reject_threshold"] == 0.4


def test_metadata_round_trips_through_the_spec(class_names, contract_metadata) -> None:
    meta = contract_metadata()
    spec = ModelSpec.from_metadata(meta)
    assert spec.class_names == tuple(class_names) and spec.num_classes == len(class_names)
    assert spec.preprocess == PreprocessConfig.from_metadata(meta)
    assert "class_names" not in spec.info and "mean" not in spec.info and "format_version" not in spec.info
    assert json.loads(dumps_metadata(spec.to_metadata())) == {**meta, "coreg_edge_version": meta["coreg_edge_version"]}
    later = spec.with_info(format="int8", quantization={"weights": "s8"})
    assert later.info["format"] == "int8" and "format" not in spec.info  # a new spec; the first is unchanged
    assert list(later.to_metadata())[-2:] == ["format", "quantization"]


def test_bad_class_names_in_metadata_are_a_metadata_error(contract_metadata) -> None:
    with pytest.raises(MetadataError, match="class_names must be a list"):
        ModelSpec.from_metadata(contract_metadata(class_names="cat"))


def test_a_classifier_carries_the_files_spec(tiny) -> None:
    classifier = Classifier(tiny.with_metadata)
    assert classifier.spec.class_names == classifier.class_names
    assert classifier.spec.preprocess == classifier.config
    assert classifier.spec.info["backbone"] == classifier.metadata["backbone"]
    assert classifier.spec.to_metadata() == {**classifier.metadata}
