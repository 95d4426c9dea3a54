"""`coreg-edge export`: fp32 + int8 pass parity; --check-only catches a broken file; failures publish nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np


def _parity(folder: Path) -> dict:
    return json.loads((folder / "parity.json").read_text())


def test_fp32_and_int8_export_pass_parity(exported):
    assert exported.result.exit_code == 0, exported.result.output
    assert "parity: OK" in exported.result.stdout
    report = _parity(exported.out)
    assert report["ok"] is True and report["reason"] is None
    assert report["peer"] == "a"  # selection.json's choice
    assert report["images"]["count"] >= 256 and report["images"]["batch_size"] > 1
    assert report["images"]["parts"][0]["source"] == "digits:test"
    fp32, int8 = report["checks"]["model.onnx"], report["checks"]["model.int8.onnx"]
    assert fp32["max_abs_logit_diff"]["value"] <= 1e-4 and fp32["max_abs_logit_diff"]["threshold"] == 1e-4
    assert fp32["top1_agreement"]["value"] == 1.0
    assert int8["mean_cosine"]["value"] >= 0.99 and int8["top1_agreement"]["value"] >= 0.98
    assert int8["accuracy_drop"]["value"] <= 0.01
    assert all(check["ok"] for checks in report["checks"].values() for check in checks.values())
    accuracy = report["test_accuracy"]
    assert accuracy["images"] == 360 and accuracy["fp32"] >= 0.9 and accuracy["int8"] >= 0.9
    assert report["files"]["model.int8.onnx"]["bytes"] < report["files"]["model.onnx"]["bytes"]
    assert report["files"]["model.onnx"]["bytes"] == (exported.out / "model.onnx").stat().st_size
    calibration = report["calibration"]
    assert calibration["source"] == "digits:train" and calibration["used"] == 256
    assert calibration["disjoint_from_parity"] is True
    assert report["quantization"]["format"] == "QDQ"
    assert sorted(p.name for p in exported.out.iterdir()) == ["model.int8.onnx", "model.onnx", "parity.json"]


def test_int8_graph_is_qdq_with_dynamic_batch(exported):
    import onnx

    model = onnx.load(str(exported.out / "model.int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    onnx.checker.check_model(model, full_check=True)


def test_check_only_passes_on_a_good_export(exported, runner, cli, tmp_path):
    out = Path(shutil.copytree(exported.out, tmp_path / "dist"))
    result = runner.invoke(cli, ["export", str(exported.run), "--out", str(out), "--check-only", "--quiet"])
    assert result.exit_code == 0, result.output
    report = _parity(out)
    assert report["ok"] and report["check_only"] and report["peer"] == "a"
    assert set(report["checks"]) == {"model.onnx", "model.int8.onnx"}


def test_perturbed_weights_fail_check_only(exported, runner, cli, tmp_path):
    import onnx
    from onnx import numpy_helper

    out = Path(shutil.copytree(exported.out, tmp_path / "dist"))
    model = onnx.load(str(out / "model.onnx"))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.05, weights.name))
    onnx.save(model, str(out / "model.onnx"))

    result = runner.invoke(cli, ["export", str(exported.run), "--out", str(out), "--check-only", "--quiet"])
    assert result.exit_code != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "model.onnx max_abs_logit_diff" in error_lines[0]
    assert "Traceback" not in result.output
    report = _parity(out)
    assert report["ok"] is False and report["checks"]["model.onnx"]["max_abs_logit_diff"]["ok"] is False


def test_failed_parity_presents_nothing_new_as_good(trained_run, runner, cli, tmp_path, monkeypatch):
    from coreg_edge.exporters import export, parity

    out = tmp_path / "dist"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"an older export")  # the user's: never deleted, never called checked
    (out / "parity.json").write_text("{}")  # an export folder (any other folder of files is refused)
    impossible = parity.Thresholds().with_limits("fp32", max_abs_logit_diff=-1.0)
    monkeypatch.setattr(export, "Thresholds", lambda **kw: impossible)
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(out), "--quiet"])
    assert result.exit_code == 1
    assert "parity failed" in result.stderr and "kept the earlier model.onnx" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.rejected", "parity.json"]
    assert (out / "model.onnx").read_bytes() == b"an older export"
    report = _parity(out)
    assert report["ok"] is False
    entry = report["files"]["model.onnx"]
    assert entry["published"] is False and "earlier export" in entry["kept"]


def test_a_good_export_survives_every_failed_re_export(exported, runner, cli, tmp_path, monkeypatch, impossible_limits):
    """Item 1 of the second bad-input tour: a failed re-export deleted the last good model."""


    out = Path(shutil.copytree(exported.out, tmp_path / "dist"))
    good = {name: (out / name).read_bytes() for name in ("model.onnx", "model.int8.onnx")}

    # 1. too many parity images asked for: every file fails, both earlier files stay byte for byte
    result = runner.invoke(
        cli,
        ["export", str(exported.run), "--out", str(out), "--int8", "--parity-images", "100000", "--quiet"],
    )
    assert result.exit_code == 1 and "fewer than 100000" in result.stderr
    assert {name: (out / name).read_bytes() for name in good} == good
    report = _parity(out)
    assert all(report["files"][name]["published"] is False for name in good)
    assert report["files"]["model.int8.onnx"]["earlier_checks"]["mean_cosine"]["ok"] is True
    assert (out / "model.onnx.rejected").exists() and (out / "model.int8.onnx.rejected").exists()

    # 2. int8 fails, fp32 passes: fp32 is published on its own, the earlier int8 stays
    impossible_limits("int8", min_cosine=1.01)
    result = runner.invoke(
        cli, ["export", str(exported.run), "--out", str(out), "--int8", "--no-recover", "--quiet"]
    )
    assert result.exit_code == 1 and "published model.onnx" in result.stderr
    assert (out / "model.int8.onnx").read_bytes() == good["model.int8.onnx"]
    report = _parity(out)
    assert report["files"]["model.onnx"]["published"] is True and not (out / "model.onnx.rejected").exists()
    assert report["files"]["model.int8.onnx"]["published"] is False
    assert "kept" in report["files"]["model.int8.onnx"] and (out / "model.int8.onnx.rejected").exists()
    assert not list(out.glob(".export-*"))


def test_a_killed_exports_staging_folder_is_cleaned_by_the_next(exported, runner, cli, tmp_path):
    out = Path(shutil.copytree(exported.out, tmp_path / "dist"))
    left = out / ".export-killed"  # what kill -9 during an export leaves behind
    left.mkdir()
    (left / "model.onnx").write_bytes(b"half a file")
    result = runner.invoke(cli, ["export", str(exported.run), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not left.exists()


def test_check_only_on_an_unreadable_file_marks_it_bad(exported, runner, cli, tmp_path):
    out = Path(shutil.copytree(exported.out, tmp_path / "dist"))
    data = (out / "model.int8.onnx").read_bytes()
    (out / "model.int8.onnx").write_bytes(data[: len(data) // 2])  # truncated copy
    result = runner.invoke(cli, ["export", str(exported.run), "--out", str(out), "--check-only", "--quiet"])
    assert result.exit_code == 1 and "model.int8.onnx" in result.stderr
    assert _parity(out)["ok"] is False
