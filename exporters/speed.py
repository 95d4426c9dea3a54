"""The int8 file's speed against fp32, measured at export on this CPU: the trade the recovery ladder makes
(a node kept in float buys parity with speed) reported beside parity, never hidden (issue #28 item 3).

Timed only where this CPU runs the target's own int8 kernels: an emulator's or another family's speed says
nothing about the device. Both files run interleaved at one batch size (runtime/bench.py), so machine noise
hits them alike; the ratio is int8's median latency over fp32's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coreg_edge.exporters.int8 import Route
from coreg_edge.runtime.bench import run_bench

SPEED_BATCH = 32
SPEED_WARMUP, SPEED_ITERS = 3, 10
#: At or above this int8/fp32 latency ratio most of int8's speed-up is gone, and the export says so.
SLOW_RATIO = 0.7


def int8_speed(
    int8_file: Path, fp32_file: Path, route: Route, *, batch_size: int = SPEED_BATCH, iters: int = SPEED_ITERS
) -> dict[str, Any]:
    """{batch_size, int8_p50_ms, fp32_p50_ms, ratio, threads, kernels}; ratio None (with `why`) where this
    CPU does not run the target's kernels."""
    if route.emulator is not None or not route.faithful:
        why = "checked on emulated kernels" if route.emulator is not None else "this CPU runs other int8 kernels"
        return {"batch_size": batch_size, "ratio": None, "why": f"not timed: {why} (bench it on the device)"}
    report = run_bench(int8_file, vs=fp32_file, batch_sizes=(batch_size,), warmup=SPEED_WARMUP, iters=iters)
    int8_ms, fp32_ms = report.main.results[0].p50_ms, report.vs.results[0].p50_ms  # type: ignore[union-attr]
    return {
        "batch_size": batch_size,
        "int8_p50_ms": int8_ms,
        "fp32_p50_ms": fp32_ms,
        "ratio": round(int8_ms / fp32_ms, 3) if fp32_ms > 0 else None,
        "threads": report.main.threads,
        "kernels": route.kernels,
    }


def speed_note(speed: dict[str, Any], float_nodes: int) -> str | None:
    """A warning when the shipped int8 file keeps too little of int8's speed-up, and why."""
    ratio = speed.get("ratio")
    if ratio is None or ratio < SLOW_RATIO:
        return None
    where = f"at batch {speed['batch_size']} on this CPU ({speed.get('kernels')} kernels)"
    if float_nodes:
        why = (f"it keeps {float_nodes} node(s) in float to pass parity; a file with none, or the fp32 file, "
               "may serve the device better")  # fmt: skip
    else:
        why = "this CPU's int8 kernels gain little on this network; bench it on the device"
    return f"model.int8.onnx runs at {ratio:.2f}x fp32's latency {where}: {why}"
