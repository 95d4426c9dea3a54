"""The metadata export writes is what the runtime reads; `info model.onnx --json` shows it."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_metadata_round_trips(exported, name):
    import onnx
    import onnxruntime as ort

    from coreg_edge.formats import format_of_file
    from coreg_edge.runtime import METADATA_KEY, Classifier, make_metadata
    from coreg_edge.training import run_folder

    path = exported.out / name
    model = onnx.load(str(path))
    assert [entry.key for entry in model.metadata_props] == [METADATA_KEY]  # exactly one entry
    stored = json.loads(model.metadata_props[0].value)

    config = run_folder.read_config(exported.run)
    expected = make_metadata(
        config["class_names"],
        run_folder.preprocess_config(exported.run),
        backbone="test_resnet",
        method="supervised",
        peer="a",
        annotator={"kind": "synthetic"},
        test_accuracy=stored["test_accuracy"],
        # the run's "none of these" threshold for this network, calibrated on held-out items
        reject_threshold=(run_folder.read_selection(exported.run).get("reject_threshold") or {}).get("a"),
    )
    expected["format"] = format_of_file(name).name  # which row of coreg_edge/formats.py made the file
    if name == "model.int8.onnx":  # the int8 file also says which CPU family it was made for
        from coreg_edge.exporters.targets import resolve_target

        target = resolve_target("auto").name
        assert stored["quantization"]["target"] == target and stored["quantization"]["settings"]
        expected["quantization"] = stored["quantization"]
    assert stored == json.loads(json.dumps(expected))
    assert 0.9 <= stored["test_accuracy"] <= 1.0

    classifier = Classifier(path)
    assert classifier.config == run_folder.preprocess_config(exported.run)
    assert list(classifier.class_names) == config["class_names"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name, out.type) == ("images", "tensor(float)", "logits", "tensor(float)")
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == [3, 16, 16]
    for batch in (1, 5):
        assert classifier.logits(np.zeros((batch, 3, 16, 16), np.float32)).shape == (batch, 10)


def test_classifier_predicts_digits(exported):
    from coreg_edge.data import open_source
    from coreg_edge.runtime import Classifier

    source = open_source("digits:test")
    images = [source.load(i) for i in range(64)]
    predictions = Classifier(exported.out / "model.int8.onnx").predict(images, topk=1)
    accuracy = np.mean([p.index == label for p, label in zip(predictions, source.labels[:64], strict=True)])
    assert accuracy >= 0.9


def test_info_json_has_bytes_and_opset(exported, runner, cli):
    path = exported.out / "model.int8.onnx"
    result = runner.invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bytes"] == path.stat().st_size
    assert summary["opset"] == 17
    assert summary["class_names"] == [str(i) for i in range(10)]
    assert summary["input_size"] == [16, 16] and summary["peer"] == "a"
    assert "other_metadata" not in summary and "other_opsets" not in summary


def test_info_reader_agrees_with_onnx(exported):
    import onnx

    from coreg_edge.runtime.describe import read_header

    for name in ("model.onnx", "model.int8.onnx"):
        model = onnx.load(str(exported.out / name))
        header = read_header(exported.out / name)
        assert header["ir_version"] == model.ir_version
        assert header["opsets"] == {o.domain: o.version for o in model.opset_import}
        assert header["metadata_props"] == {p.key: p.value for p in model.metadata_props}


def test_info_on_a_file_that_is_not_onnx(runner, cli, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"definitely not a protobuf \xff\xff")
    result = runner.invoke(cli, ["info", str(path), "--json"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error:") and "not an ONNX model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_info_on_onnx_needs_no_torch_onnx_or_onnxruntime(exported):
    """`info model.onnx` is a device command: it must work where only the base install exists."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'timm'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from coreg_edge.cli import main\n"
        "main()\n"
    )
    path = exported.out / "model.onnx"
    result = subprocess.run(
        [sys.executable, "-c", code, "info", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=exported.out,  # not the checkout: `-c` puts the cwd first on sys.path, shadowing the install
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bytes"] == path.stat().st_size
