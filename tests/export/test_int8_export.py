"""`export --int8 --target`: every preset this CPU can check faithfully passes parity, a real failure
recovers, and emulated AVX2 kernels are really other kernels.

CI machines have either CPU (AVX512-VNNI or AVX2 only); qemu-user-static (installed by .ci/run) emulates an
AVX2-only CPU for onnxruntime on both, so the x86-avx2 preset and the recovery are exercised everywhere.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from coreg_edge.cpu import kernel_family
from coreg_edge.exporters.emulation import find_emulator, run_emulated
from coreg_edge.exporters.int8 import choose_route
from coreg_edge.exporters.targets import TARGETS


def _emulator():
    emulator = find_emulator("x86-avx2")
    if emulator is None:
        if os.environ.get("CI") and platform.machine().lower() in ("x86_64", "amd64"):
            pytest.fail("CI needs qemu-user-static for the emulated AVX2 checks (.ci/run installs it)")
        pytest.skip("needs qemu-user-static on an x86-64 host (apt-get install qemu-user-static)")
    if os.environ.get("COREG_EDGE_QEMU") == "0":
        pytest.skip("COREG_EDGE_QEMU=0 turns emulation off")
    return emulator


def _no_constant(name: str):
    raise AssertionError(f"parity.json holds {name}, which is not JSON")


def _parity(folder: Path) -> dict:
    return json.loads((folder / "parity.json").read_text(), parse_constant=_no_constant)


def _export(runner, cli, run, out, *args):
    return runner.invoke(cli, ["export", str(run), "--out", str(out), "--int8", *args])


FAITHFUL = [name for name, row in TARGETS.items() if choose_route(row, emulate=True).faithful]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_preset(target, trained_run, runner, cli, tmp_path):
    """Presets this CPU can check (natively or emulated) pass as they are; the others are checked on this
    CPU's kernels and say so."""
    if target == "x86-avx2" and kernel_family() != "x86-avx2":
        _emulator()
    out = tmp_path / target
    faithful = target in FAITHFUL
    # A faithful check must pass with the preset as it is; another CPU's kernels may need recovery here.
    strict = ["--no-recover"] if faithful else []
    result = _export(runner, cli, trained_run, out, "--target", target, *strict, "--quiet")
    assert result.exit_code == 0, result.output
    report = _parity(out)
    int8 = report["int8"]
    assert int8["target"]["name"] == target and report["quantization"]["target"] == target
    if faithful:
        assert int8["shipped"] == 0 and len(int8["attempts"]) == 1
        assert report["quantization"]["reduce_range"] == TARGETS[target].settings.reduce_range
    assert int8["host"]["kernels"] == kernel_family() and int8["host"]["cpu"]
    assert int8["faithful"] is faithful
    if not faithful:
        assert "checked with its own" in int8["note"] and "checked with its own" in result.stdout
    from coreg_edge.runtime.describe import describe_onnx

    meta = describe_onnx(out / "model.int8.onnx")
    assert meta["quantization"]["target"] == target and meta["int8_kernels_here"] == kernel_family()
    assert meta["quantization"]["checked_with"] == int8["checked_with"]


def test_x86_avx2_is_checked_on_emulated_avx2_kernels(trained_run, runner, cli, tmp_path):
    if kernel_family() == "x86-avx2":
        pytest.skip("an AVX2-only host checks x86-avx2 natively (covered by test_each_target_preset)")
    emulator = _emulator()
    out = tmp_path / "avx2"
    result = _export(runner, cli, trained_run, out, "--target", "x86-avx2", "--quiet")
    assert result.exit_code == 0, result.output
    int8 = _parity(out)["int8"]
    assert int8["checked_with"] == "x86-avx2" and int8["faithful"] is True
    assert int8["emulator"]["cpu"] == emulator.cpu and "emulated" in result.stdout
    # --check-only re-checks on the kernels of the target the file names, emulated again
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(out), "--check-only", "--quiet"])
    assert result.exit_code == 0, result.output
    assert _parity(out)["int8"]["checked_with"] == "x86-avx2"


def test_emulated_avx2_kernels_are_other_kernels(exported):
    """fp32 is the same under emulation; the u8 x s8 file is not on a VNNI host (16-bit pair sums)."""
    emulator = _emulator()
    from coreg_edge.exporters.sensitivity import host_runner

    inputs = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    for name in ("model.onnx", "model.int8.onnx"):
        here = host_runner(exported.out / name, inputs, ["logits"])["logits"]
        there = run_emulated(emulator, exported.out / name, inputs)["logits"]
        if name == "model.onnx":
            np.testing.assert_allclose(there, here, atol=1e-4)
        elif kernel_family() == "x86-vnni":
            assert np.abs(there - here).max() > 0
        else:  # an AVX2-only host: the emulator runs the host's own kernels
            np.testing.assert_array_equal(there, here)


class _WrongRanges:
    """Makes the first attempt calibrate on images shrunk 50x: activation ranges far too narrow, so its
    int8 file clips almost everything and fails parity for real. Later attempts see the true images."""

    def __init__(self, monkeypatch):
        import coreg_edge.exporters.calibration as calibration

        real = calibration.ArrayCalibrationReader
        self.made = 0

        def make(images, *args, **kwargs):
            self.made += 1
            return real(images * 0.02 if self.made == 1 else images, *args, **kwargs)

        monkeypatch.setattr(calibration, "ArrayCalibrationReader", make)


def test_a_failed_attempt_recovers_and_both_are_recorded(trained_run, runner, cli, tmp_path, monkeypatch):
    _WrongRanges(monkeypatch)
    out = tmp_path / "recovered"
    result = _export(runner, cli, trained_run, out, "--target", "x86-vnni", "--emulate")
    assert result.exit_code == 0, result.output
    report = _parity(out)
    first, second = report["int8"]["attempts"]
    assert first["ok"] is False and "mean_cosine" in first["reason"] and first["seconds"] > 0
    assert first["checks"]["mean_cosine"]["value"] < 0.99
    assert first["most_sensitive"] and first["most_sensitive"][0]["op"] in ("Conv", "Gemm")
    assert second["ok"] is True and second["settings"]["reduce_range"] is True
    assert report["int8"]["shipped"] == 1 and report["int8"]["recovered"] is True
    assert report["quantization"]["reduce_range"] is True and report["ok"] is True
    assert "recovered at attempt 2" in result.stdout and "int8 attempt 1" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx", "parity.json"]
    # what shipped really has 7-bit weights: every int8 convolution weight within [-64, 64]
    weights = _int8_weights(out / "model.int8.onnx")
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)


def _int8_weights(path: Path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [
        numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 4
    ]


def test_no_recover_fails_at_once(trained_run, runner, cli, tmp_path, monkeypatch):
    _WrongRanges(monkeypatch)
    out = tmp_path / "strict"
    result = _export(runner, cli, trained_run, out, "--target", "x86-vnni", "--no-recover", "--quiet")
    assert result.exit_code == 1
    assert (
        result.stderr.strip().splitlines()[-1].startswith("Error: parity failed: model.int8.onnx mean_cosine")
    )
    report = _parity(out)
    assert (
        report["ok"] is False and len(report["int8"]["attempts"]) == 1 and report["int8"]["shipped"] is None
    )
    assert not (out / "model.int8.onnx").exists() and (out / "model.int8.onnx.rejected").exists()


def test_when_nothing_passes_every_attempt_is_recorded(run_copy, runner, cli, tmp_path, monkeypatch, impossible_limits):


    impossible_limits("int8", min_cosine=1.01)
    out = tmp_path / "never"
    result = _export(runner, cli, run_copy, out, "--target", "x86-vnni", "--quiet", "--json", "--qat-epochs", "1")
    assert result.exit_code == 1
    attempts = _parity(out)["int8"]["attempts"]
    assert json.loads(result.stdout)["int8"]["attempts"] == attempts  # nothing else on stdout
    texts = [a["settings_text"] for a in attempts]
    assert texts[:4] == [
        "U8S8 per-channel minmax",
        "U8S8 per-channel minmax reduce-range",
        "U8U8 per-channel minmax",
        "U8S8 per-channel percentile reduce-range",
    ]
    assert texts[4:] == [
        "U8S8 per-channel minmax, bias-corrected",
        "U8S8 per-channel minmax, 2 nodes in float",
        "U8S8 per-channel minmax, 5 nodes in float",
        "U8S8 per-channel minmax, fine-tuned (QAT)",  # --qat auto: nothing passed
    ]
    assert attempts[5]["settings"]["nodes_to_exclude"] == [
        n["node"] for n in attempts[0]["most_sensitive"][:2]
    ]
    assert attempts[4]["prepared"]["layers"] >= 10 and attempts[4]["settings"]["source"] == "bias-corrected"
    tuned = attempts[7]["prepared"]
    assert tuned["epochs"] >= 1 and len(tuned["loss"]) == tuned["epochs"] and tuned["device"] == "cpu"
    assert not any(a["ok"] for a in attempts)
    # the file left for inspection is the best attempt, and the report describes that one
    report = _parity(out)
    best = max(range(len(attempts)), key=lambda i: attempts[i]["checks"]["mean_cosine"]["value"])
    assert report["int8"]["best"] == best and report["int8"]["shipped"] is None
    assert report["quantization"]["nodes_to_exclude"] == attempts[best]["settings"]["nodes_to_exclude"]
    assert report["checks"]["model.int8.onnx"] == attempts[best]["checks"]
    assert (out / "model.int8.onnx.rejected").exists() and not (out / "model.int8.onnx").exists()
    shutil.rmtree(out)


def test_a_broken_emulator_is_one_line_and_check_only_records_it(
    trained_run, runner, cli, tmp_path, monkeypatch
):
    if kernel_family() == "x86-avx2" or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-avx2 is checked natively here: no emulator is used")
    good = tmp_path / "good"
    monkeypatch.setenv("COREG_EDGE_QEMU", "0")  # no emulation: an unfaithful but complete export
    assert _export(runner, cli, trained_run, good, "--target", "x86-avx2", "--quiet").exit_code == 0
    monkeypatch.setenv("COREG_EDGE_QEMU", "/bin/false")  # an "emulator" that always fails
    out = tmp_path / "broken"
    result = _export(runner, cli, trained_run, out, "--target", "x86-avx2", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: int8 parity:") and "--no-emulate" in last
    result = runner.invoke(cli, ["export", str(trained_run), "--out", str(good), "--check-only", "--quiet"])
    assert result.exit_code == 1
    report = _parity(good)
    assert report["ok"] is False and "int8 parity" in report["problems"][0]


def test_settings_onnxruntime_cannot_build_are_recorded_and_the_end_is_one_line(
    trained_run, runner, cli, tmp_path, monkeypatch
):
    import coreg_edge.exporters.int8 as int8
    from coreg_edge.exporters.errors import ExportError

    def refuse(src, dst, reader, settings):
        raise ExportError(f"onnxruntime static quantization failed: no {settings.describe()} today")

    monkeypatch.setattr(int8, "quantize", refuse)
    out = tmp_path / "refused"
    result = _export(runner, cli, trained_run, out, "--target", "x86-vnni", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        result.stderr.strip().splitlines()[-1].startswith("Error: int8: no attempt produced a file that runs")
    )
    assert "published model.onnx" in result.stderr  # fp32 passed: it stands on its own
    report = _parity(out)
    assert report["ok"] is False and "no attempt" in report["int8"]["error"]
    assert report["files"]["model.onnx"]["published"] is True and not (out / "model.int8.onnx").exists()
    assert "rejected_as" not in report["files"]["model.int8.onnx"]  # no candidate was made


def test_each_calibration_method_gives_its_own_ranges(exported, tmp_path):
    """The tour found --calibration-method entropy byte-identical to minmax; on a trained network each
    method must reach onnxruntime and change the activation ranges."""
    import onnx

    from coreg_edge.data import open_source
    from coreg_edge.exporters.calibration import ArrayCalibrationReader
    from coreg_edge.exporters.quantize import QuantSettings, pre_process, quantize
    from coreg_edge.exporters.sensitivity import quantized_activations
    from coreg_edge.runtime.classifier import Classifier

    fp32 = exported.out / "model.onnx"
    source = open_source("digits")
    images = Classifier(fp32).preprocess([source.load(i) for i in range(128)])
    pre_process(fp32, tmp_path / "pre.onnx")
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        path = tmp_path / f"{method}.onnx"
        reader = ArrayCalibrationReader(images, "images", 32, single=method != "minmax")
        quantize(tmp_path / "pre.onnx", path, reader, QuantSettings(calibration_method=method))
        scales[method] = {k: v[1] for k, v in quantized_activations(onnx.load(str(path))).items()}
    for method in ("entropy", "percentile"):
        changed = [k for k in scales["minmax"] if scales[method][k] != scales["minmax"][k]]
        assert changed, f"{method} gave minmax's ranges"


class _OnlyCopiesCalibrateRight:
    """(The tests below use the portable target: 7-bit weights, exact on this CPU whichever x86 kind it is.)
    Every attempt whose settings `passes(settings)` rejects calibrates on images shrunk 50x (its int8
    file fails parity for real); the others see the true images. Wraps the ladder's quantize step."""

    def __init__(self, monkeypatch, passes):
        import coreg_edge.exporters.int8 as int8

        real = int8.quantize

        class Shrunk:
            def __init__(self, reader):
                self.reader = reader

            def get_next(self):
                batch = self.reader.get_next()
                return None if batch is None else {k: v * 0.02 for k, v in batch.items()}

            def rewind(self):
                self.reader.rewind()

        def quantize(src, dst, reader, settings):
            return real(src, dst, reader if passes(settings) else Shrunk(reader), settings)

        monkeypatch.setattr(int8, "quantize", quantize)


def test_when_only_the_fine_tuned_copy_passes_it_ships(run_copy, runner, cli, tmp_path, monkeypatch):
    _OnlyCopiesCalibrateRight(monkeypatch, lambda settings: settings.source == "fine-tuned")
    out = tmp_path / "qat"
    result = _export(runner, cli, run_copy, out, "--target", "portable", "--qat-epochs", "1")
    assert result.exit_code == 0, result.output
    report = _parity(out)
    attempts = report["int8"]["attempts"]
    assert [a["ok"] for a in attempts] == [False] * (len(attempts) - 1) + [True]
    assert attempts[-1]["settings"]["source"] == "fine-tuned" and report["int8"]["shipped"] == len(attempts) - 1
    assert attempts[-1]["prepared"]["epochs"] == 1
    assert report["quantization"]["source"] == "fine-tuned"
    assert "fine-tuning a copy" in result.stderr
    from coreg_edge.exporters.metadata import get_metadata

    assert get_metadata(out / "model.int8.onnx")["quantization"]["settings"].endswith("fine-tuned (QAT)")


def test_a_fine_tuned_file_is_preferred_to_one_with_nodes_in_float(run_copy, runner, cli, tmp_path, monkeypatch):
    _OnlyCopiesCalibrateRight(monkeypatch, lambda s: s.source == "fine-tuned" or bool(s.nodes_to_exclude))
    out = tmp_path / "preferred"
    result = _export(runner, cli, run_copy, out, "--target", "portable", "--qat-epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    attempts = _parity(out)["int8"]["attempts"]
    float_nodes = [a for a in attempts if a["settings"]["nodes_to_exclude"]]
    assert float_nodes[0]["ok"] is True and len(float_nodes) == 1  # passed: the ladder stopped there
    assert attempts[-1]["settings"]["source"] == "fine-tuned" and attempts[-1]["ok"] is True
    assert _parity(out)["int8"]["shipped"] == len(attempts) - 1
    from coreg_edge.exporters.metadata import get_metadata

    assert get_metadata(out / "model.int8.onnx")["quantization"]["settings"].endswith("fine-tuned (QAT)")


def test_a_fine_tuned_file_that_fails_leaves_the_file_with_nodes_in_float(run_copy, runner, cli, tmp_path, monkeypatch):
    _OnlyCopiesCalibrateRight(monkeypatch, lambda settings: bool(settings.nodes_to_exclude))
    out = tmp_path / "kept"
    result = _export(runner, cli, run_copy, out, "--target", "portable", "--qat-epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    int8 = _parity(out)["int8"]
    attempts = int8["attempts"]
    assert attempts[-1]["settings"]["source"] == "fine-tuned" and attempts[-1]["ok"] is False
    assert attempts[int8["shipped"]]["settings"]["nodes_to_exclude"] and int8["recovered"] is True
    from coreg_edge.exporters.metadata import get_metadata

    assert get_metadata(out / "model.int8.onnx")["quantization"]["settings"].endswith("nodes in float")


@pytest.mark.parametrize("options", [("--qat", "off"), ("--no-recover",)], ids=["off", "no-recover"])
def test_no_fine_tuning_when_off_or_not_recovering(options, run_copy, runner, cli, tmp_path, monkeypatch):
    _OnlyCopiesCalibrateRight(monkeypatch, lambda settings: settings.source == "fine-tuned")
    out = tmp_path / "off"
    result = _export(runner, cli, run_copy, out, "--target", "portable", "--quiet", *options)
    assert result.exit_code == 1
    assert all(a["settings"]["source"] != "fine-tuned" for a in _parity(out)["int8"]["attempts"])


def test_force_fine_tunes_even_when_the_first_attempt_passes(trained_run, runner, cli, tmp_path):
    out = tmp_path / "force"
    result = _export(runner, cli, trained_run, out, "--target", "portable", "--qat", "force", "--qat-epochs", "1",
                     "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    int8 = _parity(out)["int8"]
    attempts = int8["attempts"]
    assert attempts[0]["ok"] is True and int8["recovered"] is False  # nothing needed recovering
    assert [a["settings"]["source"] for a in attempts] == ["trained", "fine-tuned"]
    assert attempts[1]["ok"] is True  # a well-trained network's copy passes too, and ships (force)
    assert int8["shipped"] == 1 and "passed too" in result.stdout
