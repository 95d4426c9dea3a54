"""The demo with this CPU's own kernels and with the AVX2 kernels an AVX2-only x86 gets, side by side (#15).

    python benchmarks/demo_kernels.py [--work DIR] [--out benchmarks/results/demo_kernels.json]

An AVX2-only machine runs other torch kernels than an AVX512/VNNI one: ATen's vectorised ops, oneDNN's
convolutions and MKL's matrix products each pick their code by CPUID. Each of the three has a switch to cap
that choice (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`, `MKL_ENABLE_INSTRUCTIONS=AVX2`), so one
machine can run the demo's training with an AVX2-only CPU's kernels: the same float sums, so (for one thread
count) the trained weights an AVX2-only CPU gets, and the time those kernels take on this core. It does not
give that machine's time: its clock, caches and memory differ.
onnxruntime's kernels are not capped (it has no such switch); the int8 step on emulated AVX2 kernels is
`benchmarks/int8_targets.py`. The two demos run one after the other; prints one table and the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import machine_line, parser, write_result

KERNELS = {
    "this CPU's": {},
    "AVX2 (capped)": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def run_demo(out: Path, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "coreg_edge", "demo", "--out", str(out), "--json", "-q"],
                          capture_output=True, text=True, env={**os.environ, **env}, cwd=tempfile.gettempdir())  # fmt: skip
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"demo failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    capability = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                env={**os.environ, **env}, check=True).stdout.strip()  # fmt: skip
    train = summary["train"]
    return {
        "wall_s": wall, "aten_capability": capability,
        "stage_seconds": {k: v["seconds"] for k, v in summary["stages"].items()},
        "test_accuracy": train["test_accuracy"], "selected": train["selected"],
        "formats": {k: {"parity": v.get("parity_ok"), "test_accuracy": v.get("test_accuracy")}
                    for k, v in (summary["export"] or {}).get("formats", {}).items()},
    }  # fmt: skip


def main() -> None:
    p = parser(__doc__, name="demo_kernels")
    p.add_argument("--work", default=None, help="folder for the two demo runs (kept)")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="coreg-demo-kernels-")).resolve()
    results = {}
    for name, env in KERNELS.items():
        results[name] = {"env": env, **run_demo(work / name.split()[0].lower().strip("'"), env)}
        print(f"done: {name} kernels, {results[name]['wall_s']:.0f} s", flush=True)
    threads = os.environ.get("OMP_NUM_THREADS")
    write_result(args.out, {"threads": threads, "runs": results}, args)
    print(f"{machine_line(load=True)}; OMP_NUM_THREADS={threads or 'unset'}")
    print("\n| kernels | ATen | demo wall s | train s | test acc a / b / ensemble | selected | int8 acc (parity) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        acc = r["test_accuracy"] or {}
        int8 = r["formats"].get("int8") or {}
        accs = " / ".join(f"{acc[k]:.4f}" for k in ("a", "b", "ensemble") if k in acc)
        print(f"| {name} | {r['aten_capability']} | {r['wall_s']:.0f} | {r['stage_seconds'].get('train', 0):.0f} | "
              f"{accs} | {r['selected']} | {'-' if int8.get('test_accuracy') is None else format(int8['test_accuracy'], '.4f')} ({'ok' if int8.get('parity') else 'FAILED'}) |")  # fmt: skip


if __name__ == "__main__":
    main()
