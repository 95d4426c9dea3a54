"""Images that moved: train --data stores where they are now (absolute), export --data finds them again."""

from __future__ import annotations

import json
import shutil

import pytest


def _train(runner, cli, ann, out, *extra):
    args = ["train", str(ann), "--out", str(out), "--method", "proden", "--backbone", "test_resnet"]
    return runner.invoke(
        cli, [*args, "--image-size", "8", "--epochs", "1", "--batch-size", "4", "--quiet", *extra]
    )


def _export(runner, cli, run, out, *extra):
    return runner.invoke(
        cli, ["export", str(run), "--out", str(out), "--parity-images", "4", "--quiet", *extra]
    )


@pytest.mark.slow
def test_a_run_trained_on_moved_images_exports_and_export_takes_data(
    class_folder, runner, cli, tmp_path, monkeypatch
):
    ann = tmp_path / "ann.npz"
    result = runner.invoke(
        cli, ["annotate", str(class_folder), "--annotator", "synthetic", "--out", str(ann), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    moved = tmp_path / "moved"
    shutil.move(str(class_folder), moved)

    # train --data, given relative to the working directory: stored absolute, and as the run's data
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    result = _train(runner, cli, ann, run, "--data", "moved")
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["data"] == str(moved.resolve())
    assert config["data"]["root"] == str(moved.resolve())

    # export finds the images where training found them, from another working directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _export(runner, cli, run, tmp_path / "dist")
    assert result.exit_code == 0, result.output
    parts = json.loads((tmp_path / "dist" / "parity.json").read_text())["images"]["parts"]
    assert parts[0]["source"] == str(moved.resolve()) and parts[0]["role"] == "held-out training"

    # moved again: one line that names --data, and --data leads out
    again = tmp_path / "again"
    shutil.move(str(moved), again)
    result = _export(runner, cli, run, tmp_path / "dist2")
    assert result.exit_code == 1 and "pass --data" in result.stderr and "Traceback" not in result.output
    result = _export(runner, cli, run, tmp_path / "dist2", "--data", str(again))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", ["images deleted", "another folder"])
def test_given_data_that_lacks_images_is_not_told_to_pass_data(
    class_folder, flat_folder, runner, cli, tmp_path, case
):
    from coreg_edge.annotate import annotate

    ann = tmp_path / "ann.npz"
    annotate(str(class_folder), ann, annotator="synthetic", quiet=True)
    (class_folder / "cat" / "img_000.png").unlink()
    data = class_folder if case == "images deleted" else flat_folder
    result = runner.invoke(cli, ["labels", str(ann), "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "pass --data" not in result.stderr  # it was passed: was "did the data move? pass --data ..."
    assert f"--data {data} does not hold all the annotated images" in result.stderr
    # not passed: there the advice fits
    recorded = runner.invoke(cli, ["labels", str(ann), "--out", str(tmp_path / "o")])
    assert recorded.exit_code == 1 and "pass --data" in recorded.stderr
