"""Model files and metadata: one-line errors that say what is missing and how to run anyway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coreg_edge.cpu import default_threads, has_int8_dot_product, parse_cpuinfo
from coreg_edge.errors import UserError
from coreg_edge.runtime import (
    Classifier,
    MetadataError,
    MissingMetadataError,
    ModelNotFoundError,
    NotOnnxError,
    PreprocessConfig,
    make_metadata,
)
from coreg_edge.runtime.metadata import (
    MetadataOverrides,
    dumps_metadata,
    parse_class_names,
    parse_metadata,
    parse_size,
    resolve_metadata,
)


def test_missing_and_non_onnx(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        Classifier(tmp_path / "nope.onnx")
    text = tmp_path / "model.onnx"
    text.write_text("hello")
    with pytest.raises(NotOnnxError, match="cannot load it as an ONNX model"):
        Classifier(text)
    with pytest.raises(NotOnnxError, match="folder"):
        Classifier(tmp_path)


def test_no_metadata_message_and_overrides(tiny, color_image) -> None:
    with pytest.raises(MissingMetadataError) as info:
        Classifier(tiny.without_metadata)
    message = str(info.value)
    assert "no coreg_edge metadata" in message and "\n" not in message
    for word in ("class names", "mean", "std", "class_names=", "mean=", "std="):  # the Python API's keywords
        assert word in message
    # The graph fixes 3x16x16, so the input size is not missing.
    assert "input_size" not in message and "--" not in message
    clf = Classifier(tiny.without_metadata, class_names="r,g,b,k", mean=0.5, std="0.25,0.25,0.25")
    reference = Classifier(tiny.with_metadata)
    # Without metadata the resize rule defaults to shorter_side (aspect kept) at the input size.
    assert clf.config.to_metadata() == {
        **reference.config.to_metadata(),
        "resize": {**reference.config.to_metadata()["resize"], "rule": "shorter_side"},
    }
    assert clf.class_names == ("r", "g", "b", "k")
    image = tiny.folder / "probe.png"
    from PIL import Image

    Image.fromarray(color_image(1, 24, 24)).save(image)
    assert clf.predict_one(image).index == reference.predict_one(image).index == 1


def test_override_contradicting_model(tiny) -> None:
    with pytest.raises(MetadataError, match="3 class names but the model outputs 4"):
        Classifier(tiny.with_metadata, class_names="a,b,c")
    with pytest.raises(MetadataError, match="model takes 16x16"):
        Classifier(tiny.with_metadata, input_size=20)


def test_resolve_dynamic_shapes_need_input_size(class_names, contract_metadata) -> None:
    shape = ["batch", 3, "height", "width"]
    with pytest.raises(MissingMetadataError, match="input size.*input_size=N"):
        resolve_metadata(None, MetadataOverrides(class_names, None, (0.5,), (0.5,)), input_shape=shape)
    meta = resolve_metadata(None, MetadataOverrides(class_names, (32, 24), (0.5,), (0.5,)), input_shape=shape)
    config = PreprocessConfig.from_metadata(meta)
    assert config.crop == (32, 24) and config.resize_size == 32 and config.mean == (0.5, 0.5, 0.5)
    # An input-size override keeps a metadata resize:crop ratio (256:224 style).
    found = contract_metadata(resize={"rule": "shorter_side", "size": 20, "interpolation": "bicubic"})
    scaled = resolve_metadata(found, MetadataOverrides(input_size=(32, 32)))
    assert scaled["resize"] == {"rule": "shorter_side", "size": 40, "interpolation": "bicubic"}


def test_partial_metadata_names_missing_keys(contract_metadata) -> None:
    found = {k: v for k, v in contract_metadata().items() if k not in ("class_names", "std")}
    with pytest.raises(MissingMetadataError, match=r"metadata lacks class names, std; .*class_names=.*std="):
        resolve_metadata(found, input_shape=["n", 3, 16, 16])
    # Bench needs neither class names nor normalisation.
    meta = resolve_metadata(
        found, input_shape=["n", 3, 16, 16], need_class_names=False, need_normalisation=False
    )
    assert meta["std"] == [1.0, 1.0, 1.0]


def test_parse_metadata_errors(class_names, contract_metadata) -> None:
    assert parse_metadata({}, "m") is None
    assert parse_metadata({"coreg_edge": json.dumps(contract_metadata())}, "m")["class_names"] == list(
        class_names
    )
    with pytest.raises(MetadataError, match="not valid JSON"):
        parse_metadata({"coreg_edge": "{oops"}, "m")
    with pytest.raises(MetadataError, match="newer"):
        parse_metadata({"coreg_edge": json.dumps(contract_metadata(format_version=99))}, "m")


def test_make_metadata_matches_contract(class_names, contract_metadata) -> None:
    config = PreprocessConfig.from_metadata(contract_metadata())
    meta = make_metadata(
        class_names, config, backbone="tiny-cnn", method="supervised", peer="a", annotator=None
    )
    assert set(contract_metadata()) == set(meta)
    assert json.loads(dumps_metadata(meta))["resize"]["rule"] == "square"
    assert meta["test_accuracy"] is None


def test_parsers(tmp_path: Path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("cat\n\n# comment\ndog\n")
    assert parse_class_names(str(names)) == ("cat", "dog")
    listed = tmp_path / "classes.json"
    listed.write_text('["a", "b"]')
    assert parse_class_names(str(listed)) == ("a", "b")
    assert parse_class_names("x, y") == ("x", "y")
    with pytest.raises(UserError, match="class_names lists 'a' twice"):
        parse_class_names("a,a")
    assert parse_size("224") == (224, 224) and parse_size("160x224") == (160, 224)
    with pytest.raises(UserError, match="input_size='big'"):
        parse_size("big")
    assert MetadataOverrides.from_strings(mean="0.5", std="1,2,3").std == (1.0, 2.0, 3.0)


def test_cpu_flags() -> None:
    x86 = "processor: 0\nflags\t: fpu sse avx2 avx512f avx512_vnni\n"
    assert parse_cpuinfo(x86) == ["AVX2", "AVX512-VNNI"]
    arm = "processor: 0\nFeatures\t: fp asimd asimddp i8mm\n"
    assert parse_cpuinfo(arm) == ["ARM-DOTPROD", "ARM-I8MM"]
    assert parse_cpuinfo("") == []
    assert has_int8_dot_product(["AVX-VNNI"]) and not has_int8_dot_product(["AVX2"])
    assert default_threads() >= 1


def test_describe_machine_names_the_cpu_and_its_flags(monkeypatch) -> None:
    from coreg_edge import cpu

    monkeypatch.setattr(cpu, "cpu_name", lambda: "AMD EPYC")
    monkeypatch.setattr(cpu, "available_cpus", lambda: 2)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: ("AVX2",))
    assert cpu.describe_machine() == "AMD EPYC, 2 CPUs, AVX2"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: ())
    assert cpu.describe_machine() == "AMD EPYC, 2 CPUs, no AVX2 or dot-product flags"


def test_wrong_file_metadata_blames_the_file_not_a_flag(contract_metadata) -> None:
    """Metadata inside the model that contradicts its graph is the file's fault: no --classes or
    --input-size the user never gave."""
    for found, words in (
        (contract_metadata(class_names=["a", "b", "c"]), "3 class names but the model outputs 4"),
        (contract_metadata(input_size=[20, 20], crop=[20, 20]), "input size 20x20 but the model takes 16x16"),
    ):
        with pytest.raises(MetadataError) as info:
            resolve_metadata(found, input_shape=["n", 3, 16, 16], output_shape=["n", 4], source="m.onnx")
        message = str(info.value)
        assert "the model file's coreg_edge metadata is wrong" in message and words in message, message
        assert "(--classes)" not in message and "(--input-size)" not in message
    # An override that contradicts the graph is named as the caller spelled it.
    with pytest.raises(MetadataError, match="--classes gives 3 class names"):
        resolve_metadata(contract_metadata(), MetadataOverrides(class_names=("a", "b", "c")),
                         input_shape=["n", 3, 16, 16], output_shape=["n", 4], caller="cli")  # fmt: skip


def test_wrong_preprocessing_in_the_file_says_the_file_is_wrong(tiny, tmp_path: Path, contract_metadata) -> None:
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(tiny.with_metadata))
    proto.metadata_props[0].value = json.dumps(contract_metadata(std=[0.25, 0.25]))  # 2 values for 3 channels
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(MetadataError, match="the model file's coreg_edge metadata is wrong: mean and std need 3"):
        Classifier(broken)
