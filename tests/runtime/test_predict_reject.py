"""`predict --reject` (#12 item 4): "none of these" below a threshold calibrated on held-out items."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreg_edge.data import open_source
from coreg_edge.training import run_folder as rf


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits_annotation):
    from click.testing import CliRunner

    from coreg_edge.cli import cli

    folder = tmp_path_factory.mktemp("reject")
    run, dist = folder / "run", folder / "dist"
    args = ["train", str(digits_annotation), "--out", str(run), "--epochs", "3", "--warmup", "1",
            "--set", "queue_size=128", "--backbone", "test_resnet", "--image-size", "8", "-q"]  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    assert runner.invoke(cli, ["export", str(run), "--out", str(dist), "-q"]).exit_code == 0
    images = folder / "images"
    images.mkdir()
    source = open_source("digits:test")
    for i in range(40):
        source.load(i).save(images / f"{i:02d}.png")
    return run, dist / "model.onnx", images


def test_the_threshold_is_calibrated_on_held_out_items_and_travels_with_the_model(exported):
    run, model, _ = exported
    selection = json.loads((run / rf.SELECTION).read_text())
    thresholds = selection["reject_threshold"]
    assert thresholds["accepts"] == 0.95 and thresholds["items"] == selection["holdout_items"]
    assert all(0.0 < thresholds[p] <= 1.0 for p in ("a", "b", "ensemble"))
    from coreg_edge.exporters.metadata import get_metadata

    assert get_metadata(model)["reject_threshold"] == thresholds[selection["selected"]]


def test_predict_answers_none_of_these_below_the_threshold(runner, cli, exported):
    _, model, images = exported
    plain = runner.invoke(cli, ["predict", str(model), str(images), "--format", "json", "--topk", "1"])
    assert plain.exit_code == 0 and '"label": null' not in plain.stdout and '"score"' not in plain.stdout
    probs = [json.loads(line)["top"][0]["prob"] for line in plain.stdout.splitlines()]
    threshold = float(np.median(probs))  # half of them fall below: both answers appear
    result = runner.invoke(cli, ["predict", str(model), str(images), "--format", "json", "--reject",
                                 "--reject-below", str(threshold)])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    for line in lines:
        assert (line["label"] is None) == (line["score"] < threshold)
        assert line["score"] == line["top"][0]["prob"]
    assert any(line["label"] is None for line in lines) and any(line["label"] is not None for line in lines)
    auto = runner.invoke(cli, ["predict", str(model), str(images), "--format", "csv", "--reject"])
    assert auto.exit_code == 0 and auto.stdout.splitlines()[0].startswith("path,label,score,label_1")
    table = runner.invoke(cli, ["predict", str(model), str(images), "--reject-below", "1"])
    assert table.exit_code == 0 and table.stdout.count("(none of these)") == 40


def test_a_model_without_a_threshold_says_what_to_do(runner, cli, exported, tmp_path):
    import onnx

    from coreg_edge.exporters.metadata import get_metadata

    _, model, images = exported
    meta = get_metadata(model)
    meta["reject_threshold"] = None
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == "coreg_edge":
            prop.value = json.dumps(meta)
    older = tmp_path / "older.onnx"
    onnx.save(proto, str(older))
    result = runner.invoke(cli, ["predict", str(older), str(images), "--reject"])
    assert result.exit_code == 1 and "carries no rejection threshold" in result.stderr
    assert "--reject-below P" in result.stderr
