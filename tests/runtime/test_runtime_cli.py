"""`coreg-edge predict` and `coreg-edge bench` in-process: formats, per-item errors, exit codes, JSON fields."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from cli_errors import assert_one_line_error, no_leftovers
from click.testing import CliRunner

from coreg_edge.cli import cli

CONTRACT_FIELDS = {"model", "bytes", "provider", "threads", "cpu_flags", "results"}
HOST_FIELDS = {"cpu", "int8_kernels", "int8_target"}  # beyond the contract: which CPU, which int8 kernels
RESULT_FIELDS = {"batch_size", "p50_ms", "p90_ms", "p99_ms", "images_per_s"}


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_predict_json_with_a_corrupt_image(tiny, image_folder: Path) -> None:
    (image_folder / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    result = run("predict", tiny.with_metadata, image_folder, "--format", "json", "--topk", "2", "-q")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 9
    errors = [line for line in lines if "error" in line]
    assert [Path(e["path"]).name for e in errors] == ["corrupt.jpg"] and set(errors[0]) == {"path", "error"}
    for line in lines:
        if "top" in line:
            assert set(line) == {"path", "top"} and len(line["top"]) == 2
            assert set(line["top"][0]) == {"label", "index", "prob"}
            assert Path(line["path"]).stem.split("_")[1] == line["top"][0]["label"]
    assert "1 of 9 inputs could not be classified" in result.stderr


def test_predict_csv_and_table(tiny, image_folder: Path) -> None:
    files = sorted(image_folder.rglob("*.png"))[:2]
    result = run("predict", tiny.with_metadata, *files, "--format", "csv", "--topk", "3")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 and rows[0]["path"] == str(files[0]) and rows[0]["error"] == ""
    assert {"label_1", "index_1", "prob_1", "label_3", "prob_3"} <= set(rows[0])
    table = run("predict", tiny.with_metadata, image_folder, "--batch-size", "3")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["path", "top-1", "prob"] and len(lines) == 9
    assert all(Path(line.split()[0]).stem.split("_")[1] == line.split()[1] for line in lines[1:])


def test_predict_usage_and_model_errors(tiny, tmp_path: Path, image_folder: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("predict", tiny.with_metadata, empty).exit_code == 2
    missing = run("predict", tmp_path / "missing.onnx", image_folder)
    assert missing.exit_code == 1 and missing.stderr.strip().count("\n") == 0
    assert "model file not found" in missing.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    not_onnx = run("predict", junk, image_folder)
    assert not_onnx.exit_code == 1 and "cannot load it as an ONNX model" in not_onnx.stderr
    assert not_onnx.stderr.strip().count("\n") == 0


def test_predict_without_metadata(tiny, image_folder: Path) -> None:
    result = run("predict", tiny.without_metadata, image_folder)
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert "class names" in result.stderr and "--classes" in result.stderr and "--mean" in result.stderr
    result = run(
        "predict",
        tiny.without_metadata,
        image_folder,
        "--classes",
        "red,green,blue,gray",
        "--mean",
        "0.5",
        "--std",
        "0.25",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert all(
        Path(line["path"]).stem.split("_")[1] == line["top"][0]["label"]
        for line in map(json.loads, result.stdout.splitlines())
    )


def test_bench_json(tiny) -> None:
    result = run(
        "bench", tiny.with_metadata, "--batch-sizes", "1,2", "--warmup", "1", "--iters", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == CONTRACT_FIELDS | HOST_FIELDS
    assert report["int8_kernels"] in ("x86-vnni", "x86-avx2", "arm64", "unknown")
    assert report["bytes"] == tiny.with_metadata.stat().st_size
    assert report["provider"] == "CPUExecutionProvider" and report["threads"] >= 1
    assert isinstance(report["cpu_flags"], list)
    assert [r["batch_size"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert (
            set(r) == RESULT_FIELDS
            and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
            and r["images_per_s"] > 0
        )


def test_bench_vs(tiny) -> None:
    result = run(
        "bench",
        tiny.with_metadata,
        "--vs",
        tiny.without_metadata,
        "--batch-sizes",
        "1,4",
        "--warmup",
        "0",
        "--iters",
        "2",
        "--threads",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == CONTRACT_FIELDS | HOST_FIELDS | {"vs", "ratios", "differences"}
    assert set(report["vs"]) == CONTRACT_FIELDS | HOST_FIELDS and report["vs"]["threads"] == 1
    assert [r["batch_size"] for r in report["ratios"]] == [1, 4]
    for ratio, a, b in zip(report["ratios"], report["results"], report["vs"]["results"], strict=True):
        assert ratio["p50_ratio"] == pytest.approx(b["p50_ms"] / a["p50_ms"], rel=1e-3)
        assert {"p90_ratio", "p99_ratio", "images_per_s_ratio"} <= set(ratio)
    table = run(
        "bench", tiny.with_metadata, "--vs", tiny.with_metadata, "--batch-sizes", "1", "--iters", "2", "-q"
    )
    assert table.exit_code == 0 and "int8 flags" in table.stdout and "p50 ratio" in table.stdout


def test_bench_usage_errors(tiny) -> None:
    assert run("bench", tiny.with_metadata, "--batch-sizes", "0,x").exit_code == 2
    assert run("bench", tiny.with_metadata, "--iters", "0").exit_code == 2
    missing = run("bench", tiny.folder / "nope.onnx")
    assert missing.exit_code == 1 and "model file not found" in missing.stderr


def test_bench_a_batch_too_large_for_memory(tiny, monkeypatch) -> None:
    import coreg_edge.runtime.bench as bench_module

    def no_memory(config, batch_size, rng):
        raise MemoryError(f"Unable to allocate an array of {batch_size} images")

    monkeypatch.setattr(bench_module, "random_input", no_memory)
    result = run("bench", tiny.with_metadata, "--batch-sizes", "99999999", "--iters", "1")
    assert result.exit_code == 1 and "unexpected" not in result.stderr
    assert result.stderr.strip() == (
        "Error: --batch-sizes 99999999: not enough memory for one batch; use smaller batch sizes"
    )


def test_bench_vs_says_when_the_two_models_are_not_alike() -> None:
    from types import SimpleNamespace

    from coreg_edge.runtime.bench import model_differences

    def model(shape, names):
        return SimpleNamespace(config=SimpleNamespace(shape=shape), metadata={"class_names": names})

    same = model((3, 16, 16), ["a", "b"])
    assert model_differences(same, model((3, 16, 16), ["a", "b"])) == []
    assert model_differences(same, model((3, 32, 32), ["a", "b"])) == ["input (3, 16, 16) vs (3, 32, 32)"]
    assert model_differences(same, model((3, 16, 16), ["a", "b", "c"])) == ["2 classes vs 3"]
    assert model_differences(same, model((3, 16, 16), ["x", "y"])) == ["other class names"]


REJECTED_PARITY = {
    "ok": False,
    "checks": {"model.int8.onnx": {"mean_cosine": {"value": 0.95, "op": ">=", "threshold": 0.99, "ok": False}}},
    "files": {"model.int8.onnx": {"published": False, "rejected_as": "model.int8.onnx.rejected"}},
}


def test_predict_and_bench_warn_on_a_rejected_model(tiny, tmp_path: Path, image_folder: Path) -> None:
    """A file export set aside (it failed parity) runs, but never silently: one warning line saying why."""
    import shutil

    dist = tmp_path / "dist"
    dist.mkdir()
    rejected = dist / "model.int8.onnx.rejected"
    shutil.copy(tiny.with_metadata, rejected)
    (dist / "parity.json").write_text(json.dumps(REJECTED_PARITY))
    for args in (["predict", rejected, image_folder, "--format", "json", "-q"],
                 ["bench", rejected, "--batch-sizes", "1", "--warmup", "0", "--iters", "1", "--json"]):  # fmt: skip
        result = run(*args)
        assert result.exit_code == 0, result.output
        warning = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
        assert len(warning) == 1 and "rejected export" in warning[0], result.stderr
        assert "mean_cosine = 0.95 (needs >= 0.99)" in warning[0]
    info = json.loads(run("info", rejected, "--json").stdout)
    assert "mean_cosine = 0.95" in info["rejected"]


def test_cli_errors_name_the_flags(tiny, image_folder: Path) -> None:
    """The command line checks with its own spellings: --input-size, --mean, --classes."""
    for args, flag in (
        (["--input-size", "big"], "--input-size big"),
        (["--mean", "x"], "--mean x"),
        (["--classes", "a,b,c"], "--classes gives 3 class names"),
    ):
        result = run("predict", tiny.with_metadata, image_folder, *args)
        assert result.exit_code == 1 and flag in result.stderr and "=" not in result.stderr, result.stderr
    result = run("predict", tiny.without_metadata, image_folder)
    assert "pass --classes a,b,c|FILE --mean M[,M,M] --std S[,S,S]" in result.stderr


def test_bench_dir_times_the_good_files_and_names_the_corrupt_one(tiny, tmp_path: Path) -> None:
    import shutil

    dist = tmp_path / "dist"
    dist.mkdir()
    shutil.copy(tiny.with_metadata, dist / "model.onnx")
    shutil.copy(tiny.with_metadata, dist / "model.fp16.onnx")
    (dist / "model.int8.onnx").write_bytes(tiny.with_metadata.read_bytes()[:200])  # cut short in a copy
    result = run("bench", dist, "--batch-sizes", "1", "--warmup", "0", "--iters", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["format"] for row in report["formats"]] == ["fp32", "fp16"]
    assert [(s["format"], s["file"]) for s in report["skipped"]] == [("int8", "model.int8.onnx")]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "model.int8.onnx" in warnings[0], result.stderr
    (dist / "model.onnx").write_bytes(b"junk")
    (dist / "model.fp16.onnx").write_bytes(b"junk")
    none = run("bench", dist, "--batch-sizes", "1", "--iters", "1")
    assert none.exit_code == 1 and "no model in this folder could be opened" in none.stderr


def test_info_describes_export_and_pipeline_folders(tiny, tmp_path: Path) -> None:
    """info on an export folder or a pipeline run says what it is, never "train one with coreg-edge train"."""
    import shutil

    dist = tmp_path / "dist"
    dist.mkdir()
    shutil.copy(tiny.with_metadata, dist / "model.onnx")
    shutil.copy(tiny.with_metadata, dist / "model.int8.onnx.rejected")
    result = run("info", dist, "--json")
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert described["kind"] == "export folder" and described["parity_json"] is False
    assert described["files"]["model.onnx"]["parity"] == "unknown"
    assert described["files"]["model.int8.onnx.rejected"]["parity"] == "failed"
    pipeline = tmp_path / "run"
    pipeline.mkdir()
    (pipeline / "stages.json").write_text(json.dumps({"format_version": 1, "stages": {"annotate": {}}}))
    (pipeline / "summary.json").write_text(json.dumps({"stages": {"annotate": {"status": "ran"}},
                                                       "deployable": "export/model.int8.onnx"}))  # fmt: skip
    result = run("info", pipeline)
    assert result.exit_code == 0, result.output
    assert "pipeline run" in result.stdout and "train one" not in result.output
    described = json.loads(run("info", pipeline, "--json").stdout)
    assert described["deployable"] is None  # summary.json names it, but it is not there
    (tmp_path / "other").mkdir()
    other = run("info", tmp_path / "other")
    assert other.exit_code == 1 and "train one" not in other.stderr and "export folder" in other.stderr


def test_info_on_a_missing_file_is_one_line(runner, cli, tmp_path):
    result = runner.invoke(cli, ["info", str(tmp_path / "absent.npz")])
    assert_one_line_error(result, "no such")
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "m.onnx", "--batch-sizes", "0,x"],
    ],
)
def test_usage_errors_are_one_line(runner, cli, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--help" in lines[0], lines


def test_a_bare_command_still_shows_its_help(runner, cli):
    result = runner.invoke(cli, [])
    assert "Usage:" in result.output and "Commands:" in result.output
