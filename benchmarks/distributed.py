"""1 process vs N processes (torchrun + DDP, gloo on the CPU) on the demo's training, same global batch.

    python benchmarks/distributed.py [--nproc 2] [--seeds 0,1] [--out benchmarks/results/distributed.json]

The demo recipe's [train] settings (recipes/digits.toml: test_resnet at 8 px, 40 epochs, warm-up 15, batch 32,
lr 0.05) on its synthetic annotation, trained by `coreg-edge train` on 1 process with batch 32 and on N
processes with batch 32/N each (the same global batch; the lr is given, so it is the global batch's). Prints
test accuracy (digits:test, reported only) and the median seconds per warm-up and per Co-Reg epoch, side by
side in one run. On a 2-core CPU two processes share the cores the one process had (1 thread each instead
of 2): the table measures the overhead and the agreement of the distributed path, not a speed-up, which
needs one GPU (or machine) per process. Takes about 6 minutes on 2 cores; never in CI.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import log, machine_line, parser, write_result

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits.toml"


def train_args(recipe: dict, batch: int) -> list[str]:
    t = recipe["train"]
    return ["--backbone", t["backbone"], "--image-size", str(t["image_size"]), "--epochs", str(t["epochs"]),
            "--warmup", str(t["warmup"]), "--batch-size", str(batch), "--strong-augment", t["strong_augment"],
            "--set", f"lr={recipe['train']['coreg']['lr']}", "--set", f"queue_size={recipe['train']['coreg']['queue_size']}",
            "--eval", recipe["data"]["eval"], "-q"]  # fmt: skip


def run(annotation: Path, out: Path, nproc: int, batch: int, seed: int, recipe: dict) -> dict:
    command = [sys.executable, "-m", "coreg_edge", "train", str(annotation), *train_args(recipe, batch),
               "--seed", str(seed), "--nproc", str(nproc), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    selection = json.loads((out / "selection.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = {phase: [m["seconds"] for m in metrics if m["phase"] == phase] for phase in ("warmup", "coreg")}
    return {
        "nproc": nproc, "seed": seed, "batch_per_process": batch, "global_batch": selection["processes"]["global_batch"],
        "test_accuracy": selection["test_accuracy"], "selected": selection["selected"],
        "s_per_warmup_epoch": statistics.median(seconds["warmup"]), "s_per_coreg_epoch": statistics.median(seconds["coreg"]),
        "weights_identical_across_ranks": selection["processes"]["weights_identical_across_ranks"],
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = ["| processes | batch per process (global) | test acc a | test acc b | selected peer | s / warm-up epoch | "
             "s / Co-Reg epoch | ranks identical |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for nproc in sorted({r["nproc"] for r in rows}):
        group = [r for r in rows if r["nproc"] == nproc]

        def mean(key: str, group: list[dict] = group) -> str:
            values = [r["test_accuracy"][key] for r in group]
            return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")

        same = {r["weights_identical_across_ranks"] for r in group}
        lines.append(
            f"| {nproc} | {group[0]['batch_per_process']} ({group[0]['global_batch']}) | {mean('a')} | {mean('b')} | "
            f"{mean('selected')} | {statistics.median(r['s_per_warmup_epoch'] for r in group):.2f} | "
            f"{statistics.median(r['s_per_coreg_epoch'] for r in group):.2f} | "
            f"{'n/a' if same == {None} else ('yes' if same == {True} else 'NO')} |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__, name="distributed")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--seeds", default="0,1")
    args = p.parse_args()
    recipe = tomllib.loads(RECIPE.read_text())
    batch = int(recipe["train"]["batch_size"])
    if batch % args.nproc:
        raise SystemExit(f"--nproc {args.nproc} must divide the recipe's batch {batch}")
    from coreg_edge.annotate import annotate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        annotation = Path(tmp) / "digits.npz"
        a = recipe["annotate"]
        annotate(recipe["data"]["train"], annotation, annotator=a["annotator"], partial_rate=a["partial_rate"],
                 noise_rate=a["noise_rate"], seed=recipe["seed"], quiet=True)  # fmt: skip
        for seed in (int(s) for s in args.seeds.split(",")):
            for nproc, per_process in ((1, batch), (args.nproc, batch // args.nproc)):  # interleaved
                rows.append(run(annotation, Path(tmp) / f"n{nproc}-s{seed}", nproc, per_process, seed, recipe))
                log(f"seed {seed}, {nproc} process(es): {rows[-1]['test_accuracy']}")
    print(f"{machine_line(load=True)}\n{table(rows)}")
    write_result(args.out, {"command": " ".join(["python", *sys.argv]), "rows": rows}, args)


if __name__ == "__main__":
    main()
