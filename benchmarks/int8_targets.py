"""int8 settings per CPU family: accuracy on this CPU's kernels AND on emulated AVX2-only kernels, and
latency on this CPU, side by side in one run. The measurements behind `exporters/targets.py` (docs/INT8.md).

    python benchmarks/int8_targets.py --run /tmp/demo/train                 # the demo's run folder
    python benchmarks/int8_targets.py --run runs/a --run runs/b --iters 200 --out benchmarks/results/int8_targets.json

For each run: export fp32 (`export_run`), calibrate on the run's training images and check on its parity
images (the same plan as `coreg-edge export`), then for each settings row: mean cosine and top-1
agreement against the fp32 file here and under `qemu-x86_64-static -cpu Haswell` (AVX2, no VNNI: the
16-bit pair sums), and int8 / fp32 p50 latency here (interleaved, `run_bench`). Emulated latency means
nothing and is not measured. The reference is the fp32 ONNX file (within 1e-4 of PyTorch by parity).
The default --out is named after the run folder (its parent's name for a `train` folder: the demo's layout).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from harness import machine_line, parser, write_result

from coreg_edge.cpu import cpu_flags, cpu_name, kernel_family
from coreg_edge.exporters.builders import open_classifier
from coreg_edge.exporters.calibration import ArrayCalibrationReader, preprocess_calibration
from coreg_edge.exporters.emulation import find_emulator, run_emulated
from coreg_edge.exporters.export import export_run
from coreg_edge.exporters.images import iter_batches, plan_images
from coreg_edge.exporters.parity import cosine
from coreg_edge.exporters.quantize import QuantSettings, pre_process, quantize
from coreg_edge.exporters.sensitivity import host_runner
from coreg_edge.runtime.bench import run_bench
from coreg_edge.training.run_folder import read_config

ROWS = {
    "U8S8 (x86-vnni, arm64)": QuantSettings(),
    "U8S8 reduce-range (x86-avx2, portable)": QuantSettings(reduce_range=True),
    "U8U8": QuantSettings(weight_type="uint8"),
    "S8S8": QuantSettings(activation_type="int8"),
    "U8S8 percentile reduce-range": QuantSettings(reduce_range=True, calibration_method="percentile"),
}


def _agreement(reference: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    return {
        "mean_cosine": round(float(cosine(reference, logits).mean()), 5),
        "top1_agreement": round(float((reference.argmax(1) == logits.argmax(1)).mean()), 4),
    }


def measure(run: Path, iters: int, threads: int) -> list[dict[str, Any]]:
    config = read_config(run)
    emulator = find_emulator("x86-avx2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_run(run, folder, quiet=True)
        fp32 = folder / "model.onnx"
        plan = plan_images(config, run, calibration_images=256, parity_images=256, seed=0, calibrate=True)
        classifier = open_classifier(fp32, 32)
        inputs = np.concatenate(
            [classifier.preprocess(images) for images, _, _ in iter_batches(list(plan.parity), 32, [])]
        )
        reference = host_runner(fp32, inputs, ["logits"])["logits"]
        pre_process(fp32, folder / "pre.onnx")
        images = preprocess_calibration(classifier, plan.calibration, folder / "calibration.npy", 32, True)
        for label, settings in ROWS.items():
            path = folder / "q.onnx"
            single = settings.calibration_method != "minmax"
            reader = ArrayCalibrationReader(images.array, classifier.loaded.input_name, 32, single)
            quantize(folder / "pre.onnx", path, reader, settings)
            row: dict[str, Any] = {
                "run": str(run),
                "settings": label,
                "size_vs_fp32": round(path.stat().st_size / fp32.stat().st_size, 3),
            }
            row["here"] = _agreement(reference, host_runner(path, inputs, ["logits"])["logits"])
            if emulator is not None:
                row["emulated_avx2"] = _agreement(reference, run_emulated(emulator, path, inputs)["logits"])
            bench = run_bench(fp32, vs=path, batch_sizes=(1, 32), iters=iters, warmup=5, threads=threads)
            row["p50_ratio"] = {str(r["batch_size"]): r["p50_ratio"] for r in bench.ratios}
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    here, emulated = row["here"], row.get("emulated_avx2") or {}
    return (
        f"{row['settings']:<40} {here['mean_cosine']:>9.5f} {here['top1_agreement']:>7.4f} "
        f"{emulated.get('mean_cosine', float('nan')):>9.5f} {emulated.get('top1_agreement', float('nan')):>7.4f} "
        f"{row['p50_ratio']['1']:>7.3f} {row['p50_ratio']['32']:>7.3f} {row['size_vs_fp32']:>6.3f}"
    )


def run_names(args: argparse.Namespace) -> str:
    """The runs' folder names joined by "+" ("demo/train" -> "demo"): the default result file's suffix."""
    names = []
    for run in args.run:
        path = Path(run).resolve()
        names.append(path.parent.name if path.name == "train" and path.parent.name else path.name)
    return "+".join(names)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, name="int8_targets", suffix=run_names, threads=2)
    p.add_argument("--run", action="append", required=True, help="a finished run folder (repeatable)")
    p.add_argument("--iters", type=int, default=100, help="timed iterations per batch size")
    args = p.parse_args(argv)
    print(machine_line(args.threads, load=True))
    print(f"int8 kernels: {kernel_family()}")
    print(f"emulated: {'qemu-x86_64-static -cpu Haswell' if find_emulator('x86-avx2') else 'none (no qemu)'}")
    print(
        f"{'settings':<40} {'cos here':>9} {'top1':>7} {'cos avx2':>9} {'top1':>7} {'b1 x':>7} {'b32 x':>7} {'size':>6}"
    )
    rows = []
    for run in args.run:
        print(f"-- {run}")
        rows += measure(Path(run), args.iters, args.threads)
    meta = {"cpu": cpu_name(), "cpu_flags": list(cpu_flags()), "kernels": kernel_family()}
    write_result(args.out, {"machine": meta, "rows": rows}, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
