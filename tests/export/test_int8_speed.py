"""exporters/speed.py: the shipped int8 file's latency against fp32, timed at export where this CPU runs the
target's kernels, reported in parity.json and the summary, and a warning when the speed-up is mostly gone."""

from __future__ import annotations

import json
import warnings

from coreg_edge.exporters import speed as speed_module
from coreg_edge.exporters.int8 import Route
from coreg_edge.exporters.parity import summary_line
from coreg_edge.exporters.speed import SLOW_RATIO, int8_speed, speed_note


def test_the_export_times_int8_against_fp32_on_the_targets_kernels(exported):
    assert exported.result.exit_code == 0, exported.result.output
    int8 = json.loads((exported.out / "parity.json").read_text())["int8"]
    speed = int8["speed"]
    assert speed["batch_size"] == 32 and speed["kernels"] == int8["checked_with"]
    assert speed["int8_p50_ms"] > 0 and speed["fp32_p50_ms"] > 0 and speed["threads"] >= 1
    assert speed["ratio"] == round(speed["int8_p50_ms"] / speed["fp32_p50_ms"], 3)
    assert f"int8 at {speed['ratio']:.2f}x fp32's latency (batch 32, this CPU)" in summary_line(int8)


def test_other_kernels_are_not_timed(tmp_path):
    emulated = Route("x86-avx2", "x86-vnni", "x86-avx2", True, "emulated", emulator=object())  # type: ignore[arg-type]
    unfaithful = Route("arm64", "x86-avx2", "x86-avx2", False, "other kernels")
    for route in (emulated, unfaithful):
        speed = int8_speed(tmp_path / "a.onnx", tmp_path / "b.onnx", route)  # never opened
        assert speed["ratio"] is None and speed["why"].startswith("not timed")
    assert "fp32's latency" not in summary_line({"target": {"name": "arm64"}, "attempts": [{"settings_text": "s"}],
                                                 "shipped": 0, "note": "n", "speed": speed})  # fmt: skip


def test_a_slow_int8_file_is_said_and_why():
    slow = {"batch_size": 32, "ratio": SLOW_RATIO + 0.1, "kernels": "x86-avx2"}
    assert "keeps 2 node(s) in float" in speed_note(slow, float_nodes=2)
    assert "gain little" in speed_note(slow, float_nodes=0)
    assert speed_note({**slow, "ratio": SLOW_RATIO - 0.1}, float_nodes=2) is None
    assert speed_note({"batch_size": 32, "ratio": None}, float_nodes=2) is None


def test_the_warning_reaches_the_user_when_the_shipped_file_is_slow(trained_run, runner, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(speed_module, "SLOW_RATIO", 0.0)  # any measured ratio is "slow"
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        result = runner.invoke(cli, ["export", str(trained_run), "--int8", "--formats", "fp32,int8",
                                     "--out", str(tmp_path / "dist"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Warning: model.int8.onnx runs at" in result.stderr and "fp32's latency" in result.stderr
