"""Bad input: a clear one-line error and a non-zero exit, never a traceback, never a half-written DIR."""

from __future__ import annotations

import json
from pathlib import Path


def _fails(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_missing_run_folder(runner, cli, tmp_path):
    result = runner.invoke(cli, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "dist")])
    _fails(result, 1, "no such run folder")
    assert not (tmp_path / "dist").exists()


def test_run_without_selection(run_copy, runner, cli, tmp_path):
    (run_copy / "selection.json").unlink()
    result = runner.invoke(cli, ["export", str(run_copy), "--out", str(tmp_path / "dist")])
    _fails(result, 1, "selection.json")


def test_unknown_peer(trained_run, runner, cli, tmp_path):
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(tmp_path / "d"), "--peer", "c"])
    _fails(result, 2, "--peer")


def test_ensemble_needs_both_peers(run_copy, runner, cli, tmp_path):
    (run_copy / "peer_b.safetensors").unlink()
    result = runner.invoke(cli, ["export", str(run_copy), "--out", str(tmp_path / "d"), "--peer", "ensemble"])
    _fails(result, 1, "needs both peers", "peer_b")
    assert not any(Path(tmp_path / "d").glob("*.onnx"))


def test_library_rejects_unknown_peer(trained_run, tmp_path):
    import pytest

    from coreg_edge.errors import UserError
    from coreg_edge.exporters.export import export_run

    with pytest.raises(UserError, match="--peer must be one of"):
        export_run(trained_run, tmp_path / "d", peer="c")


def test_check_only_without_an_export(trained_run, runner, cli, tmp_path):
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(tmp_path), "--check-only"])
    _fails(result, 1, "no model.onnx to check")


def test_out_is_a_file(trained_run, runner, cli, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(target)])
    _fails(result, 1, "is a file")


def test_corrupt_peer_weights(run_copy, runner, cli, tmp_path):
    (run_copy / "peer_a.safetensors").write_bytes(b"junk")
    result = runner.invoke(cli, ["export", str(run_copy), "--out", str(tmp_path / "d"), "--peer", "a"])
    _fails(result, 1, "peer_a.safetensors: not a readable safetensors file")
    assert "unexpected" not in result.stderr and not any(Path(tmp_path / "d").glob("*.onnx"))


def test_malformed_run_files_are_named(run_copy, runner, cli, tmp_path):
    (run_copy / "selection.json").write_text("[]\n")
    for args in (["export", str(run_copy), "--out", str(tmp_path / "d")], ["info", str(run_copy)]):
        _fails(runner.invoke(cli, args), 1, "selection.json: corrupt JSON (expected an object")
    (run_copy / "selection.json").unlink()
    (run_copy / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1, "lr\n')
    shown = runner.invoke(cli, ["info", str(run_copy), "--json"])  # what it can, and the line it left out
    assert shown.exit_code == 0 and "Traceback" not in shown.output, shown.output
    summary = json.loads(shown.stdout)
    assert summary["epochs_done"] == 1 and summary["metrics_lines_skipped"] == ["line 2 (not JSON)"]
    assert summary["epochs"] is None  # this hand-made run's config records no settings: n/a, not a crash


def test_export_never_writes_into_a_folder_of_other_files(trained_run, runner, cli, tmp_path):
    """An export refreshes its own folder (one with parity.json) but never puts model files among a user's:
    refused before any work, the user's model.onnx untouched."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the user's own model")
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(out)])
    line = result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 1 and "is no export folder (no parity.json)" in line, result.stderr
    assert (out / "model.onnx").read_bytes() == b"the user's own model"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]


def test_fine_tuning_on_a_gpu_that_is_not_there_is_one_line_before_any_work(trained_run, runner, cli, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(tmp_path / "d"), "--int8", "--device", "cuda"])
    _fails(result, 1, "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "d").exists()
    # without int8 (nothing to fine-tune) or with --qat off, --device does not matter to export
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(tmp_path / "e"), "--int8", "--device", "cuda",
                                 "--qat", "off", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
