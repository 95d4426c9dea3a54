"""Export benchmark: file size, latency (batch 1 and 32) and digits accuracy of PyTorch eager, ONNX fp32 and
ONNX int8, measured side by side in one run. A script, not a test (it trains networks and takes minutes).

    python benchmarks/export_bench.py                      # resnet18 (small-input stem) + mobilenetv3_small_050
    python benchmarks/export_bench.py --grid               # plus the int8 settings grid on the first backbone
    python benchmarks/export_bench.py --run runs/NAME      # an existing run folder instead of training
    python benchmarks/export_bench.py --out FILE           # the tables' rows as JSON (default below)

Each backbone is trained briefly (`train(method="supervised")`: true labels, digits at --image-size px) into
a run folder, exported with `export_run` (fp32 + int8, parity-checked on
digits:test), then timed: the three runtimes take turns within every iteration (order alternating), so
machine noise hits all of them; onnxruntime sessions do not spin while idle, PyTorch and onnxruntime use the
same thread count. Latency is the p50 over --iters timed runs of random normalised input.

Targets for ResNet-18: int8 file <= 0.3x fp32; int8 batch-32 latency <= 0.75x fp32; ONNX fp32 batch-1
latency <= 0.33x PyTorch eager; int8 accuracy within 1 point of fp32. The rows of the tables go to --out
(default benchmarks/results/export_bench.json).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import load_average, log, machine_line, parser, write_result

from coreg_edge.annotate import annotate
from coreg_edge.exporters.errors import ParityError
from coreg_edge.exporters.export import export_run
from coreg_edge.runtime.bench import random_input
from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.runtime.session import open_session
from coreg_edge.training import run_folder
from coreg_edge.training.trainer import train

BATCHES = (1, 32)


def train_run(
    folder: Path,
    backbone: str,
    image_size: int,
    epochs: int,
    batch_size: int = 32,
    lr: float = 0.1,
    seed: int = 0,
) -> float:
    """Supervised digits training into a run folder through the library's trainer (`coreg-edge train
    --method supervised`: true labels, weak views, SGD + cosine); returns test accuracy of peer a."""
    annotation = folder.with_suffix(".npz")
    annotate("digits", annotation, annotator="synthetic", seed=seed, quiet=True)  # labels ride along
    summary = train(
        annotation, folder, method="supervised", backbone=backbone, image_size=image_size, epochs=epochs,
        batch_size=batch_size, seed=seed, eval_data="digits:test", quiet=True, coreg={"lr": lr},
    )  # fmt: skip
    return float(summary["test_accuracy"]["a"])


def time_side_by_side(
    runners: dict[str, Any], config: PreprocessConfig, iters: int, warmup: int
) -> dict[str, dict[int, float]]:
    """p50 ms per runner and batch size; runners take turns inside each iteration, order alternating."""
    rng = np.random.default_rng(0)
    results: dict[str, dict[int, float]] = {name: {} for name in runners}
    names = list(runners)
    for batch in BATCHES:
        x = random_input(config, batch, rng)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for i in range(warmup + iters):
            for name in names if i % 2 == 0 else reversed(names):
                start = time.perf_counter()
                runners[name](x)
                if i >= warmup:
                    seconds[name].append(time.perf_counter() - start)
        for name in names:
            results[name][batch] = float(np.percentile(np.asarray(seconds[name]) * 1000, 50))
    return results


def describe_run(folder: Path) -> str:
    """ "resnet18 (small-input stem), 32 px" from the run's config."""
    network = run_folder.read_config(folder)["network"]
    stem = ""
    if network.get("small_stem") or (
        network.get("small_stem") is None and "resnet" in network["backbone"] and network["image_size"] <= 64
    ):
        stem = " (small-input stem)"
    return f"{network['backbone']}{stem}, {network['image_size']} px"


def export_checked(run: Path, out: Path, **settings: Any) -> dict[str, Any]:
    """export_run with int8; a failed parity check is reported (and its files still timed), not fatal."""
    try:
        return export_run(run, out, int8=True, quiet=True, **settings)
    except ParityError as exc:
        log(f"  PARITY FAILED: {exc}")
        return exc.report


def make_runners(
    run: Path, out: Path, threads: int, names: tuple[str, ...] = ("model.onnx", "model.int8.onnx")
):
    net = run_folder.load_network(run, run_folder.read_selection(run)["selected"])

    def eager(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    runners: dict[str, Any] = {"PyTorch eager": eager}
    for name in names:
        path = (
            out / name if (out / name).exists() else out / f"{name}.rejected"
        )  # timed even if parity failed
        session = open_session(path, threads=threads, spinning=False)
        runners[name] = lambda x, s=session: s.run(["logits"], {"images": x})[0]
    return runners


def benchmark(
    run: Path, out: Path, label: str, threads: int, iters: int, warmup: int
) -> list[dict[str, Any]]:
    log(f"exporting {label} ...")
    start = time.perf_counter()
    report = export_checked(run, out)
    log(f"  export + int8 + parity: {time.perf_counter() - start:.1f} s")
    config = run_folder.preprocess_config(run)
    latency = time_side_by_side(make_runners(run, out, threads), config, iters, warmup)
    accuracy = report["test_accuracy"] or {}
    sizes = {name: info["bytes"] for name, info in report["files"].items()}
    fp32_bytes = sizes["model.onnx"]
    rows = []
    for name, key, size in (
        ("PyTorch eager", "pytorch", fp32_bytes),
        ("model.onnx", "fp32", fp32_bytes),
        ("model.int8.onnx", "int8", sizes["model.int8.onnx"]),
    ):
        rows.append(
            {
                "model": label,
                "runtime": {"model.onnx": "ONNX fp32", "model.int8.onnx": "ONNX int8"}.get(name, name),
                "bytes": None if name == "PyTorch eager" else size,
                "b1": latency[name][1],
                "b32": latency[name][32],
                "accuracy": accuracy.get(key),
            }
        )
    return rows


def grid(run: Path, root: Path, threads: int, iters: int, warmup: int) -> list[dict[str, Any]]:
    """int8 settings side by side: size, latency vs fp32 and parity for each activation type x per-channel."""
    rows = []
    for activation in ("uint8", "int8"):
        for per_channel in (True, False):
            out = root / f"grid-{activation}-{'pc' if per_channel else 'pt'}"
            report = export_checked(run, out, activation_type=activation, per_channel=per_channel)
            config = run_folder.preprocess_config(run)
            runners = make_runners(run, out, threads)
            runners.pop("PyTorch eager")
            latency = time_side_by_side(runners, config, iters, warmup)
            checks = report["checks"]["model.int8.onnx"]
            rows.append(
                {
                    "activations": "U8" if activation == "uint8" else "S8",
                    "per_channel": per_channel,
                    "size": report["files"]["model.int8.onnx"]["vs_fp32"],
                    "b1": latency["model.int8.onnx"][1] / latency["model.onnx"][1],
                    "b32": latency["model.int8.onnx"][32] / latency["model.onnx"][32],
                    "cosine": checks["mean_cosine"]["value"],
                    "top1": checks["top1_agreement"]["value"],
                    "drop": checks.get("accuracy_drop", {}).get("value"),
                }
            )
            log(f"  grid {rows[-1]}")
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | runtime | file MB | b1 p50 ms | b32 p50 ms | digits:test acc |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = "-" if r["bytes"] is None else f"{r['bytes'] / 1e6:.2f}"
        acc = "-" if r["accuracy"] is None else f"{r['accuracy'] * 100:.2f}%"
        lines.append(f"| {r['model']} | {r['runtime']} | {size} | {r['b1']:.3f} | {r['b32']:.2f} | {acc} |")
    return "\n".join(lines)


def format_ratios(rows: list[dict[str, Any]]) -> str:
    """The targets, per model: int8/fp32 size and b32 latency, fp32/eager b1 latency, accuracy change."""
    lines = [
        "| model | int8/fp32 size (<= 0.3) | int8/fp32 b32 (<= 0.75) | fp32/eager b1 (<= 0.33) | int8 - fp32 acc (>= -1 pt) |",
        "|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        eager, fp32, int8 = (r for r in rows if r["model"] == model)
        acc = "-"
        if fp32["accuracy"] is not None and int8["accuracy"] is not None:
            acc = f"{(int8['accuracy'] - fp32['accuracy']) * 100:+.2f} pt"
        lines.append(
            f"| {model} | {int8['bytes'] / fp32['bytes']:.3f} | {int8['b32'] / fp32['b32']:.3f} | "
            f"{fp32['b1'] / eager['b1']:.3f} | {acc} |"
        )
    return "\n".join(lines)


def format_grid(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| activations / weights | per-channel | int8/fp32 size | int8/fp32 b1 | int8/fp32 b32 | cosine | top-1 agree | acc drop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        drop = "-" if r["drop"] is None else f"{r['drop'] * 100:.2f} pt"
        lines.append(
            f"| {r['activations']} / S8 | {'yes' if r['per_channel'] else 'no'} | {r['size']:.3f} | {r['b1']:.3f} | "
            f"{r['b32']:.3f} | {r['cosine']:.5f} | {r['top1'] * 100:.1f}% | {drop} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__, name="export_bench", threads=2)
    p.add_argument("--backbones", default="resnet18,mobilenetv3_small_050")
    p.add_argument("--epochs", default="8,10", help="training epochs per backbone (comma-separated)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (cosine schedule)")
    p.add_argument("--run", action="append", default=[], help="existing run folder(s) instead of training")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--grid", action="store_true", help="also the int8 settings grid on the first model")
    p.add_argument("--grid-only", action="store_true", help="only the grid (no eager timing table)")
    p.add_argument("--keep", type=Path, default=None, help="keep runs and exports here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    root = args.keep or Path(tempfile.mkdtemp(prefix="export-bench-"))
    started = time.perf_counter()
    runs: list[tuple[str, Path]] = [(describe_run(Path(r)), Path(r)) for r in args.run]
    if not runs:
        backbones = args.backbones.split(",")
        epochs = [int(e) for e in args.epochs.split(",")]
        epochs += [epochs[-1]] * (len(backbones) - len(epochs))
        for backbone, count in zip(backbones, epochs, strict=False):
            folder = root / f"run-{backbone}"
            log(f"training {backbone} at {args.image_size} px for {count} epochs ...")
            accuracy = train_run(folder, backbone, args.image_size, count, args.batch_size, args.lr)
            log(f"  {backbone}: digits:test {accuracy:.4f}")
            runs.append((describe_run(folder), folder))
            if args.grid_only:
                break

    print(machine_line(args.threads, load=True))
    rows: list[dict[str, Any]] = []
    grid_rows: list[dict[str, Any]] | None = None
    if not args.grid_only:
        for label, folder in runs:
            rows += benchmark(
                folder, root / f"dist-{folder.name}", label, args.threads, args.iters, args.warmup
            )
        print()
        print(format_rows(rows))
        print()
        print(format_ratios(rows))
    if args.grid or args.grid_only:
        label, folder = runs[0]
        log(f"int8 settings grid on {label} ...")
        print()
        print(f"int8 settings on {label} (weights S8; minmax calibration, 256 digits:train images):")
        grid_rows = grid(folder, root, args.threads, args.iters, args.warmup)
        print(format_grid(grid_rows))
    write_result(args.out, {"rows": rows, "grid": grid_rows}, args)
    print(
        f"\n(total {time.perf_counter() - started:.0f} s; load average at end {load_average()}; files under {root})"
    )


if __name__ == "__main__":
    main()
