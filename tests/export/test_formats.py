"""Every edge format from one table (#13 item 1): fp32, int8, fp16, ORT format, each judged by its own row's
check set, its metadata on board, and run by the device install."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coreg_edge.exporters.parity import CHECK_SETS, Logits, Thresholds, evaluate
from coreg_edge.formats import FORMATS, format_of_file, get_format, resolve_formats

ALL_FILES = ["model.onnx", "model.int8.onnx", "model.fp16.onnx", "model.ort", "model.int8.ort"]


def test_the_table_resolves_sources_and_names():
    assert [row.name for row in resolve_formats(["int8-ort"])] == ["fp32", "int8", "int8-ort"]  # sources come along
    assert [row.name for row in resolve_formats([], int8=True)] == ["fp32", "int8"]  # --int8 is a shorthand
    assert [row.name for row in resolve_formats(["all"], int8=False)] == ["fp32", "fp16", "ort"]  # --no-int8
    assert [row.file_name for row in resolve_formats(["all"])] == ALL_FILES
    assert format_of_file("model.fp16.onnx").checks == "fp16" and format_of_file("notes.txt") is None
    assert all(row.checks in CHECK_SETS for row in FORMATS)


def test_every_format_is_exported_and_judged_by_its_own_checks(exported_all):
    out, result = exported_all
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["export"]["formats"] == ["fp32", "int8", "fp16", "ort", "int8-ort"]
    sides = ["model.required_operators.config", "model.int8.required_operators.config"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*ALL_FILES, *sides, "parity.json"])
    assert report["files"]["model.ort"]["side_files"] == ["model.required_operators.config"]
    operators = (out / "model.int8.required_operators.config").read_text()
    assert "QuantizeLinear" in operators and "Conv" in operators  # what a reduced onnxruntime build must include
    assert "# - model.int8.ort" in operators and ".export-" not in operators  # names the file, not a temporary path
    expected_checks = {
        "model.onnx": ["max_abs_logit_diff", "top1_agreement"],
        "model.ort": ["max_abs_logit_diff", "top1_agreement"],  # the same graph: fp32's exact limits
        "model.fp16.onnx": ["mean_cosine", "top1_agreement", "accuracy_drop"],
        "model.int8.onnx": ["mean_cosine", "top1_agreement", "accuracy_drop"],
        "model.int8.ort": ["mean_cosine", "top1_agreement", "accuracy_drop"],
    }
    assert {name: list(checks) for name, checks in report["checks"].items()} == expected_checks
    assert report["checks"]["model.fp16.onnx"]["mean_cosine"]["threshold"] == 0.999  # never int8's 0.99
    assert report["checks"]["model.fp16.onnx"]["accuracy_drop"]["threshold"] == 0.005
    assert report["thresholds"]["fp16"]["min_cosine"] == 0.999 and report["thresholds"]["int8"]["min_cosine"] == 0.99
    files = report["files"]
    assert files["model.fp16.onnx"]["bytes"] < files["model.onnx"]["bytes"] > files["model.int8.onnx"]["bytes"]
    assert files["model.ort"]["format"] == "ort" and files["model.ort"]["ort"]["optimization_style"] == "fixed"
    assert files["model.ort"]["ort"]["target_platform"] == "arm"
    accuracy = report["test_accuracy"]
    assert set(accuracy) == {"pytorch", "fp32", "int8", "fp16", "ort", "int8-ort", "images"}
    assert accuracy["ort"] == accuracy["fp32"] and abs(accuracy["fp16"] - accuracy["fp32"]) <= 0.005


def test_each_file_carries_its_own_metadata_ort_files_too(exported_all, runner, cli):
    from coreg_edge.exporters.metadata import get_metadata
    from coreg_edge.runtime import Classifier

    out, result = exported_all
    report = json.loads(result.stdout)
    for name in ALL_FILES:
        meta = get_metadata(out / name)
        row = format_of_file(name)
        assert meta["format"] == row.name, name
        assert meta["test_accuracy"] == report["test_accuracy"][row.name], name  # its own measured accuracy
        assert meta["class_names"] == [str(i) for i in range(10)]
    assert get_metadata(out / "model.int8.ort")["quantization"] == get_metadata(out / "model.int8.onnx")["quantization"]
    assert get_metadata(out / "model.ort")["ort"]["tool"] == "onnxruntime.tools.convert_onnx_models_to_ort"
    info = runner.invoke(cli, ["info", str(out / "model.ort"), "--json"])
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout)
    assert described["container"] == "ort" and described["format"] == "ort" and described["coreg_edge_metadata"]
    classifier = Classifier(out / "model.ort")  # the runtime reads the metadata from the .ort file itself
    assert classifier.class_names == tuple(str(i) for i in range(10))


def test_fp16_is_never_judged_by_the_int8_limits():
    """Logits that meet int8's limits but not fp16's: the file's own row decides which limits apply."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(400, 10)).astype(np.float32) * 5
    noisy = reference + rng.normal(scale=0.3, size=reference.shape).astype(np.float32)  # cosine about 0.998
    measured = Logits(reference, {"model.fp16.onnx": noisy, "model.int8.onnx": noisy}, np.full(400, -1),
                      np.zeros(400, bool), [])  # fmt: skip
    rows = {"model.fp16.onnx": get_format("fp16"), "model.int8.onnx": get_format("int8")}
    checks, _ = evaluate(measured, rows, Thresholds())
    cosine = checks["model.int8.onnx"]["mean_cosine"]["value"]
    assert 0.99 < cosine < 0.999
    assert checks["model.int8.onnx"]["mean_cosine"]["ok"] and not checks["model.fp16.onnx"]["mean_cosine"]["ok"]


def test_a_failed_fp16_is_rejected_and_the_others_published(run_copy, runner, cli, tmp_path, impossible_limits):
    impossible_limits("fp16", min_cosine=1.01)
    out = tmp_path / "dist"
    result = runner.invoke(cli, ["export", str(run_copy), "--out", str(out), "--formats", "fp16,ort", "-q"])
    assert result.exit_code == 1
    assert "parity failed: model.fp16.onnx mean_cosine" in result.stderr.strip().splitlines()[-1]
    assert (out / "model.onnx").is_file() and (out / "model.ort").is_file()  # passed: published
    assert not (out / "model.fp16.onnx").exists() and (out / "model.fp16.onnx.rejected").is_file()


def test_check_only_rechecks_every_format(exported_all, runner, cli, tmp_path):
    import shutil

    out, _ = exported_all
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    run = json.loads((copy / "parity.json").read_text())["run"]
    result = runner.invoke(cli, ["export", run, "--out", str(copy), "--check-only", "--json", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["check_only"] and list(report["checks"]) == ALL_FILES
    assert report["test_accuracy"]["int8-ort"] == report["test_accuracy"]["int8"]


def test_the_device_install_predicts_an_ort_file_and_benches_every_format(exported_all, device_env, device_run):
    out, _ = exported_all
    image = out.parent / "seven.png"
    from coreg_edge.data import open_source

    source = open_source("digits:test")
    source.load(int(np.flatnonzero(source.labels == 7)[0])).save(image)
    predict = device_run(device_env, "-m", "coreg_edge", "predict", out / "model.ort", image, "--format", "json")
    assert predict.returncode == 0, predict.stderr
    assert json.loads(predict.stdout.splitlines()[0])["top"][0]["label"] == "7"
    int8_ort = device_run(device_env, "-m", "coreg_edge", "predict", out / "model.int8.ort", image, "--format", "json")
    assert int8_ort.returncode == 0 and json.loads(int8_ort.stdout.splitlines()[0])["top"][0]["label"] == "7"
    bench = device_run(device_env, "-m", "coreg_edge", "bench", out, "--batch-sizes", "1,4", "--warmup", "0",
                       "--iters", "2", "--json")  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    rows = json.loads(bench.stdout)["formats"]
    assert [row["format"] for row in rows] == ["fp32", "int8", "fp16", "ort", "int8-ort"]
    assert all(row["parity_ok"] and row["results"][1]["batch_size"] == 4 for row in rows)
    table = device_run(device_env, "-m", "coreg_edge", "bench", out, "--batch-sizes", "1", "--warmup", "0",
                       "--iters", "2")  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any(line.split()[:2] == ["int8-ort", "model.int8.ort"] for line in lines)
    info = device_run(device_env, "-m", "coreg_edge", "info", out / "model.int8.ort", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["format"] == "int8-ort"


def test_bad_format_names_are_one_line(runner, cli, run_copy, tmp_path):
    result = runner.invoke(cli, ["export", str(run_copy), "--out", str(tmp_path / "x"), "--formats", "fp32,tflite"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --formats must be each one of fp32, int8, fp16, ort, int8-ort, all (got 'tflite')"
    )
    bench = runner.invoke(cli, ["bench", str(tmp_path)])
    assert bench.exit_code == 1 and "no exported model in this folder" in bench.stderr


def test_a_format_that_cannot_be_made_is_its_own_error_not_the_exports(run_copy, runner, cli, tmp_path, monkeypatch):
    import coreg_edge.exporters.builders as builders
    from coreg_edge.runtime.metadata import ModelError

    def broken(module):
        raise ModelError("no fp16 kernels (simulated)")

    monkeypatch.setattr(builders, "half_peer", broken)
    out = tmp_path / "dist"
    result = runner.invoke(cli, ["export", str(run_copy), "--out", str(out), "--formats", "fp16,ort", "--json", "-q"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["files"]["model.fp16.onnx"]["error"] == "model.fp16.onnx: no fp16 kernels (simulated)"
    assert report["files"]["model.fp16.onnx"]["published"] is False and report["reason"].startswith("model.fp16.onnx")
    assert (out / "model.onnx").is_file() and (out / "model.ort").is_file() and not (out / "model.fp16.onnx").exists()
    assert json.loads((out / "parity.json").read_text())["files"]["model.fp16.onnx"]["error"]
    empty = runner.invoke(cli, ["export", str(run_copy), "--out", str(tmp_path / "y"), "--formats", ","])
    assert empty.exit_code == 2 and "--formats needs at least one of fp32" in empty.stderr


def test_check_only_names_a_file_under_another_formats_name(exported_all, runner, cli, tmp_path):
    import shutil

    out, _ = exported_all
    copy = Path(shutil.copytree(out, tmp_path / "swapped"))
    (copy / "model.int8.onnx").rename(copy / "tmp")
    (copy / "model.fp16.onnx").rename(copy / "model.int8.onnx")
    (copy / "tmp").rename(copy / "model.fp16.onnx")
    run = json.loads((copy / "parity.json").read_text())["run"]
    result = runner.invoke(cli, ["export", run, "--out", str(copy), "--check-only", "-q"])
    assert result.exit_code == 1
    assert "model.int8.onnx: its metadata says it is a fp16 file; it belongs under model.fp16.onnx" in result.stderr


def test_bench_without_parity_json_reads_each_files_own_accuracy(exported_all, runner, cli, tmp_path):
    import shutil

    out, result = exported_all
    folder = tmp_path / "copied"
    folder.mkdir()
    for name in ("model.onnx", "model.int8.ort"):  # copied to a device without parity.json
        shutil.copy(out / name, folder / name)
    bench = runner.invoke(cli, ["bench", str(folder), "--batch-sizes", "1", "--warmup", "0", "--iters", "2", "--json"])
    assert bench.exit_code == 0, bench.output
    rows = {row["format"]: row for row in json.loads(bench.stdout)["formats"]}
    accuracy = json.loads(result.stdout)["test_accuracy"]
    assert rows["fp32"]["test_accuracy"] == accuracy["fp32"] and rows["int8-ort"]["test_accuracy"] == accuracy["int8-ort"]
    assert rows["fp32"]["parity_ok"] is None  # no parity.json here: not claimed


def test_format_lists_tolerate_spaces(run_copy, runner, cli, tmp_path):
    result = runner.invoke(cli, ["export", str(run_copy), "--out", str(tmp_path / "d"), "--formats", "fp32 , ort", "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["export"]["formats"] == ["fp32", "ort"]


def test_no_int8_leaves_int8_out_of_a_recipe_that_lists_it(tmp_path):
    from coreg_edge.pipeline.calls import export_call
    from coreg_edge.recipe import load_recipe
    from coreg_edge.settings import ExportSettings

    listed = ExportSettings(**export_call(load_recipe("digits")))
    assert [row.name for row in listed.chosen_formats()] == ["fp32", "int8", "fp16", "ort", "int8-ort"]
    import pytest

    with pytest.warns(UserWarning, match="int8 is off"):  # the recipe lists int8: said, not silent
        without = ExportSettings(**export_call(load_recipe("digits", ["export.int8=false"])))
    assert [row.name for row in without.chosen_formats()] == ["fp32", "fp16", "ort"] and not without.makes_int8


def test_no_int8_with_int8_formats_asked_for_warns(runner, cli, tmp_path):
    """`--formats int8 --no-int8`: both asked for, int8 loses, and a warning line says so (never silent)."""
    import pytest

    from coreg_edge.settings import ExportSettings

    with pytest.warns(UserWarning, match="int8 is off .* so int8, int8-ort, named in the formats asked for, are left out"):
        settings = ExportSettings(formats=("int8", "int8-ort", "fp16"), int8=False)
    assert [row.name for row in settings.chosen_formats()] == ["fp32", "fp16"]
    result = runner.invoke(cli, ["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "d"), "--formats", "int8",
                                 "--no-int8"])  # fmt: skip
    assert "Warning: int8 is off" in result.stderr and "int8, named in the formats asked for, is left out" in result.stderr
