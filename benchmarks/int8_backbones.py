"""int8 per backbone: which step of the export's ladder passes parity, and what the shipped file's speed is
(issue #28 item 4; docs/INT8.md).

    python benchmarks/int8_backbones.py                                   # the matrix: hours on 2 cores
    python benchmarks/int8_backbones.py --backbones test_resnet --image-size 8 --epochs 5 --seeds 3
    python benchmarks/int8_backbones.py --targets auto,x86-avx2 --out benchmarks/results/int8_backbones.json

For each backbone x seed, through the commands a user runs: `coreg-edge annotate digits --annotator
synthetic --partial-rate 0.3 --noise-rate 0.2 --seed S`, `coreg-edge train ANN --backbone B --image-size P
--epochs E --warmup W --eval digits:test --device cpu --seed S` (from scratch), then for each target
`coreg-edge export RUN --int8 --target T --json`. A row per (backbone, seed, target): the run's test
accuracy, the step that shipped (or none), and for the shipped (else best) file mean cosine, top-1
agreement, accuracy drop and the int8/fp32 latency ratio at batch 32 (measured only where this CPU runs the
target's kernels), with every attempt's settings and checks. A target this CPU checks on other kernels
(x86-vnni on an AVX2-only CPU) says so in its row (`faithful`). Rows are written as they finish; after a
stop, `--resume` with that result file keeps its rows and runs only the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import log, machine_line, parser, write_result

BACKBONES = (
    "resnet18",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
    "efficientnet_b0",
    "lcnet_050",
)


def coreg_edge(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, as a user runs it (stdout captured: the JSON)."""
    return subprocess.run([sys.executable, "-m", "coreg_edge", *args], capture_output=True, text=True)


def train_run(folder: Path, backbone: str, seed: int, args: Any) -> tuple[Path, float | None]:
    """Annotate digits synthetically and train `backbone` from scratch; the run folder and its test accuracy."""
    annotation, run = folder / f"syn{seed}.npz", folder / f"{backbone}_s{seed}"
    if not annotation.exists():
        coreg_edge("annotate", "digits", "--annotator", "synthetic", "--partial-rate", "0.3", "--noise-rate",
                   "0.2", "--seed", str(seed), "--out", str(annotation), "-q").check_returncode()  # fmt: skip
    done = coreg_edge(
        "train", str(annotation), "--backbone", backbone, "--image-size", str(args.image_size), "--epochs",
        str(args.epochs), "--warmup", str(args.warmup), "--eval", "digits:test", "--device", "cpu", "--seed",
        str(seed), "--out", str(run), "--json", "-q",
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"train {backbone} seed {seed}: {done.stderr.strip().splitlines()[-1:]}")
    accuracy = json.loads(done.stdout).get("test_accuracy")  # {a, b, ensemble, selected}
    return run, accuracy.get("selected") if isinstance(accuracy, dict) else accuracy


def export_row(run: Path, target: str, folder: Path) -> dict[str, Any]:
    """`coreg-edge export RUN --int8 --target T --json`: what shipped, its checks and speed, every attempt."""
    began = time.perf_counter()
    done = coreg_edge("export", str(run), "--int8", "--target", target, "--out", str(folder), "--json", "-q")
    seconds = round(time.perf_counter() - began, 1)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1], "seconds": seconds}
    int8 = report.get("int8") or {}
    attempts = int8.get("attempts") or []
    index = int8.get("shipped") if int8.get("shipped") is not None else int8.get("best")
    kept = attempts[index] if index is not None and attempts else {}
    checks = kept.get("checks") or {}
    return {
        "passed": int8.get("shipped") is not None,
        "step": kept.get("settings_text"),
        "attempt": kept.get("attempt"),
        **{name: (checks.get(name) or {}).get("value") for name in ("mean_cosine", "top1_agreement", "accuracy_drop")},
        "speed_ratio": (int8.get("speed") or {}).get("ratio"),
        "checked_with": int8.get("checked_with"),
        "faithful": int8.get("faithful"),
        "attempts": [
            {"settings": a.get("settings_text"), "ok": a.get("ok"), "reason": a.get("reason"),
             "seconds": a.get("seconds"), "prepared": a.get("prepared")}
            for a in attempts
        ],  # fmt: skip
        "seconds": seconds,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'backbone':<24} {'seed':>4} {'target':<9} {'acc':>6} {'passed at':<58} {'cos':>7} {'agree':>6} "
             f"{'drop':>7} {'int8/fp32':>9}"]  # fmt: skip

    def number(value: Any, width: int, digits: int) -> str:
        return f"{value:>{width}.{digits}f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"

    for row in rows:
        step = row.get("step") if row.get("passed") else f"none (best: {row.get('step')})"
        lines.append(
            f"{row['backbone']:<24} {row['seed']:>4} {row['target']:<9} {number(row.get('test_accuracy'), 6, 3)} "
            f"{str(step)[:58]:<58} {number(row.get('mean_cosine'), 7, 4)} {number(row.get('top1_agreement'), 6, 3)} "
            f"{number(row.get('accuracy_drop'), 7, 3)} {number(row.get('speed_ratio'), 9, 2)}"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__, name="int8_backbones")
    p.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated timm names")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--targets", default="auto", help="comma-separated export targets (auto: this CPU's)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--resume", type=Path, default=None, metavar="PATH",
                   help="a stopped run's result file: its rows are kept and not run again")  # fmt: skip
    args = p.parse_args()
    print(machine_line(load=True))
    rows: list[dict[str, Any]] = json.loads(args.resume.read_text())["rows"] if args.resume else []
    done = {(r["backbone"], r["seed"], r["target"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="int8-backbones-") as tmp:
        folder = Path(tmp)
        for backbone in args.backbones.split(","):
            for seed in range(args.seeds):
                wanted = [t for t in args.targets.split(",") if (backbone, seed, t) not in done]
                if not wanted:
                    continue
                log(f"{backbone} seed {seed}: training {args.epochs} epochs at {args.image_size} px")
                run, accuracy = train_run(folder, backbone, seed, args)
                for target in wanted:
                    row = {"backbone": backbone, "seed": seed, "target": target, "image_size": args.image_size,
                           "epochs": args.epochs, "test_accuracy": accuracy,
                           **export_row(run, target, folder / f"dist_{backbone}_{seed}_{target}")}  # fmt: skip
                    rows.append(row)
                    write_result(args.out, {"rows": rows}, args)
                    log(table([row]).splitlines()[-1])
    print(table(rows))


if __name__ == "__main__":
    main()
