"""int8 targets: the table, the host's kernel family, the recovery ladder (pure functions, hand-checked)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coreg_edge.cpu import kernel_family
from coreg_edge.errors import UserError
from coreg_edge.exporters.int8 import choose_route
from coreg_edge.exporters.quantize import QuantSettings
from coreg_edge.exporters.sensitivity import sqnr
from coreg_edge.exporters.targets import TARGETS, apply_overrides, recovery_ladder, resolve_target
from coreg_edge.runtime.bench import ModelBench


@pytest.mark.parametrize(
    ("flags", "machine", "family"),
    [
        (("AVX2", "AVX512-VNNI"), "x86_64", "x86-vnni"),
        (("AVX2", "AVX-VNNI"), "x86_64", "x86-vnni"),
        (("AVX2",), "x86_64", "x86-avx2"),
        ((), "AMD64", "x86-avx2"),  # SSE-only x86 uses the same saturating pair sums
        (("ARM-DOTPROD",), "aarch64", "arm64"),
        ((), "arm64", "arm64"),
        ((), "riscv64", "unknown"),
    ],
)
def test_kernel_family(flags, machine, family):
    assert kernel_family(flags, machine) == family


def test_auto_is_the_hosts_row_and_unknown_cpus_get_the_portable_one():
    assert resolve_target("auto", "x86-avx2").settings.reduce_range is True
    assert resolve_target("auto", "x86-vnni").name == "x86-vnni"
    assert resolve_target("auto", "arm64").name == "arm64"
    assert resolve_target("auto", "unknown").name == "portable"
    assert resolve_target("auto").name == resolve_target("auto", kernel_family()).name
    with pytest.raises(UserError, match="--target must be one of auto, x86-vnni"):
        resolve_target("x86-sse")


def test_every_row_says_why_and_the_avx2_rows_avoid_saturation():
    for row in TARGETS.values():
        assert row.reason and row.cpus and row.kernels
        assert row.to_dict()["settings"]["format"] == "QDQ"
    # u8 x s8 pairs summed in 16 bits: 255 * 127 * 2 = 64770 > 32767; 7-bit weights (|w| <= 64): 32640 fits
    assert 255 * 127 * 2 > 32767 >= 255 * 64 * 2
    for name in ("x86-avx2", "portable"):
        assert TARGETS[name].settings.reduce_range and TARGETS[name].settings.weight_type == "int8"


def test_explicit_options_override_the_target_and_none_keeps_it():
    base = TARGETS["x86-avx2"].settings
    assert apply_overrides(base, activation_type=None, reduce_range=None) == base
    changed = apply_overrides(base, reduce_range=False, calibration_method="percentile")
    assert (changed.reduce_range, changed.calibration_method, changed.per_channel) == (
        False,
        "percentile",
        True,
    )


def test_the_ladder_removes_one_cause_at_a_time_without_repeats():
    ladder = recovery_ladder(QuantSettings())
    assert [s.describe() for s in ladder] == [
        "U8S8 per-channel minmax",
        "U8S8 per-channel minmax reduce-range",
        "U8U8 per-channel minmax",
        "U8S8 per-channel percentile reduce-range",
    ]
    # A target that already has 7-bit weights does not try them twice.
    avx2 = recovery_ladder(TARGETS["x86-avx2"].settings)
    assert len(avx2) == 3 and len(set(avx2)) == 3 and avx2[0].reduce_range
    excluded = QuantSettings(nodes_to_exclude=("/conv1/Conv", "/fc/Gemm"))
    assert excluded.describe() == "U8S8 per-channel minmax, 2 nodes in float"
    assert excluded.to_dict()["nodes_to_exclude"] == ["/conv1/Conv", "/fc/Gemm"]


def test_routes_say_when_the_host_cannot_run_the_targets_kernels(monkeypatch):
    monkeypatch.setenv("COREG_EDGE_QEMU", "0")  # no emulator: the plain, unfaithful route
    same = choose_route(TARGETS["x86-vnni"], host="x86-vnni")
    assert same.faithful and same.kernels == "x86-vnni" and same.emulator is None
    arm = choose_route(TARGETS["arm64"], host="x86-vnni")
    assert not arm.faithful and "cannot run arm64 kernels" in arm.note and "checked with its own" in arm.note
    avx2 = choose_route(TARGETS["x86-avx2"], host="x86-vnni")
    assert not avx2.faithful and "qemu-user-static" in avx2.note
    vnni = choose_route(TARGETS["x86-vnni"], host="x86-avx2", emulate=True)
    assert not vnni.faithful and "VNNI cannot be emulated" in vnni.note
    portable = choose_route(TARGETS["portable"], host="arm64")
    assert portable.faithful and portable.kernels == "arm64"
    assert set(same.to_dict()) == {"host", "checked_with", "emulator", "faithful", "note"}


def test_sqnr_by_hand():
    reference = np.array([3.0, 4.0])  # signal power 25
    assert sqnr(reference, np.array([3.0, 3.5])) == pytest.approx(10 * math.log10(25 / 0.25))
    assert sqnr(reference, reference) == math.inf


def test_bench_warns_when_an_int8_file_was_made_for_another_cpu():
    def bench(target):
        return ModelBench("dist/model.int8.onnx", 1, "CPU", 1, (), (), "cpu", "x86-vnni", target)

    assert "quantized for arm64; this CPU runs x86-vnni" in bench("arm64").target_note
    assert bench("x86-vnni").target_note is None and bench("portable").target_note is None
    assert bench(None).target_note is None


def test_an_emulator_that_does_not_present_avx2_is_refused():
    from coreg_edge.exporters.emulation import EmulationError, Emulator, check_features

    emulator = Emulator("x86-avx2", "/usr/bin/qemu-x86_64-static", "Haswell")
    check_features(emulator, 'noise\n{"AVX2": true, "AVX512VNNI": false, "AVX512BW": false}')
    with pytest.raises(EmulationError, match="AVX2 missing"):
        check_features(emulator, '{"AVX2": false}')  # an old qemu without AVX2 in TCG
    with pytest.raises(EmulationError, match="AVX512VNNI present"):
        check_features(emulator, '{"AVX2": true, "AVX512VNNI": true}')
    with pytest.raises(EmulationError, match="did not report"):
        check_features(emulator, "")
