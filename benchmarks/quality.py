"""Quality vs baselines on digits with synthetic candidate sets: same backbone, views, epochs and batch.

    python benchmarks/quality.py [--seeds 0,1,2] [--settings 0.3:0.2,0.1:0.1] [--methods coreg,proden,...]
                                 [--backbone test_resnet] [--image-size 8] [--epochs 40] [--warmup 15]
                                 [--batch-size 32] [--lr 0.05] [--strong-augment weak]
                                 [--out benchmarks/results/quality.json]

Every method trains for the same number of epochs (Co-Reg's warm-up included) on the same annotation file
per (setting, seed); test accuracy on digits:test is reported only, never used to choose. Prints mean +- std
per method and setting, and how often the label-free selection picked the better Co-Reg peer. Long: run it
in the background, never in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from coreg_edge.annotate import annotate
from coreg_edge.training import run_folder as rf
from coreg_edge.training.trainer import train

METHODS = ("coreg", "proden", "cc", "ce-top1", "supervised")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default="0.3:0.2,0.1:0.1", help="q:eta pairs")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--queue-size", type=int, default=1024)
    parser.add_argument(
        "--strong-augment", default="weak", help="strong views (weak: the digits recipe's choice)"
    )
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument(
        "--from-runs", metavar="DIR", help="no training: rebuild the results from a finished work folder"
    )
    parser.add_argument(
        "--merge", nargs="+", metavar="FILE", help="no training: print the tables of earlier results files "
        "(a later file's row replaces an earlier one for the same setting, seed and method)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.merge:
        rows: dict[tuple, dict] = {}
        for name in args.merge:
            for r in json.loads(Path(name).read_text())["results"]:
                rows[(r["q"], r["eta"], r["seed"], r["method"])] = r
        print_table(list(rows.values()))
        return
    if args.from_runs:
        results = rows_from_runs(Path(args.from_runs), previous_seconds(Path(args.out)))
        write_results(Path(args.out), args, results)
        return
    work = Path(tempfile.mkdtemp(prefix="coreg-quality-"))
    print(f"work folder: {work}", flush=True)
    results = []
    for setting in args.settings.split(","):
        q, eta = (float(x) for x in setting.split(":"))
        for seed in (int(s) for s in args.seeds.split(",")):
            ann = work / f"digits-q{q}-e{eta}-s{seed}.npz"
            annotate(
                "digits", ann, annotator="synthetic", partial_rate=q, noise_rate=eta, seed=seed, quiet=True
            )
            for method in args.methods.split(","):
                began = time.perf_counter()
                run = work / f"{ann.stem}-{method}"
                train(
                    ann, run, method=method, backbone=args.backbone,
                    image_size=args.image_size, epochs=args.epochs, warmup=args.warmup if method == "coreg" else None,
                    batch_size=args.batch_size, seed=seed, eval_data="digits:test", quiet=True,
                    strong_augment=args.strong_augment,
                    coreg={"lr": args.lr, "queue_size": args.queue_size},
                )  # fmt: skip
                row = result_row(run, q, eta, seed, method, time.perf_counter() - began)
                results.append(row)
                print(json.dumps(row), flush=True)
    write_results(Path(args.out), args, results)


def result_row(run: Path, q: float, eta: float, seed: int, method: str, seconds: float) -> dict:
    """One run's row. `peak_test_accuracy`: the selected peer's best epoch on the test set, a reference only
    (choosing it would peek at test labels); it shows how much a baseline loses by fitting noise late."""
    selection = json.loads((run / "selection.json").read_text())
    peer = selection["selected"]
    peaks = [r["test_accuracy"][peer] for r in rf.read_metrics(run) if r.get("test_accuracy")]
    return {"q": q, "eta": eta, "seed": seed, "method": method, "selected": peer,
            "test_accuracy": selection["test_accuracy"], "peak_test_accuracy": max(peaks, default=None),
            "seconds": seconds}  # fmt: skip


def previous_seconds(out: Path) -> dict[tuple, float]:
    """Wall seconds per (q, eta, seed, method) from an earlier results file, if there is one."""
    if not out.exists():
        return {}
    rows = json.loads(out.read_text())["results"]
    return {(r["q"], r["eta"], r["seed"], r["method"]): r["seconds"] for r in rows}


def rows_from_runs(work: Path, seconds: dict[tuple, float]) -> list[dict]:
    """Rows for every finished run folder `digits-q{q}-e{eta}-s{seed}-{method}` in `work`. Seconds: the wall
    time recorded in `seconds` (the earlier --out file), else the sum of the epochs' `seconds` (training only)."""
    pattern = re.compile(r"digits-q([0-9.]+)-e([0-9.]+)-s(\d+)-(.+)$")
    rows = []
    for run in sorted(work.iterdir()):
        match = pattern.match(run.name)
        if match and (run / "selection.json").exists():
            q, eta, seed, method = match.groups()
            key = (float(q), float(eta), int(seed), method)
            spent = seconds.get(key, sum(r["seconds"] for r in rf.read_metrics(run)))
            rows.append(result_row(run, *key, spent))
    return rows


def write_results(out: Path, args: argparse.Namespace, results: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print_table(results)


def print_table(results: list[dict]) -> None:
    print(
        "\n| q, eta | method | selected peer (mean +- std) | ensemble | peak epoch (test-peeking) | median seconds |"
    )
    print("|---|---|---|---|---|---|")
    for q, eta in sorted({(r["q"], r["eta"]) for r in results}, reverse=True):
        for method in METHODS:
            rows = [r for r in results if r["q"] == q and r["eta"] == eta and r["method"] == method]
            if not rows:
                continue
            sel = [r["test_accuracy"]["selected"] for r in rows]
            ens = [r["test_accuracy"]["ensemble"] for r in rows if r["test_accuracy"]["ensemble"] is not None]
            std = statistics.stdev(sel) if len(sel) > 1 else 0.0
            ens_text = f"{statistics.mean(ens):.4f}" if ens else "-"
            secs = statistics.median(r["seconds"] for r in rows)  # robust to a run that shared the machine
            peak = statistics.mean(r["peak_test_accuracy"] for r in rows)
            print(f"| {q}, {eta} | {method} | {statistics.mean(sel):.4f} +- {std:.4f} | {ens_text} | {peak:.4f} | "
                  f"{secs:.0f} |")  # fmt: skip
    coreg = [r for r in results if r["method"] == "coreg"]
    if coreg:
        print("\n| q, eta | seed | peer a | peer b | selected | ensemble |")
        print("|---|---|---|---|---|---|")
        for r in coreg:
            acc = r["test_accuracy"]
            print(f"| {r['q']}, {r['eta']} | {r['seed']} | {acc['a']:.4f} | {acc['b']:.4f} | "
                  f"{r['selected']} ({acc['selected']:.4f}) | {acc['ensemble']:.4f} |")  # fmt: skip
        best = [max(r["test_accuracy"]["a"], r["test_accuracy"]["b"]) for r in coreg]
        chosen = [r["test_accuracy"]["selected"] for r in coreg]
        better = sum(c >= b for c, b in zip(chosen, best, strict=True))
        strict = [r for r in coreg if r["test_accuracy"]["a"] != r["test_accuracy"]["b"]]
        strict_better = sum(
            r["test_accuracy"]["selected"] == max(r["test_accuracy"]["a"], r["test_accuracy"]["b"])
            for r in strict
        )
        print(
            f"\nlabel-free selection picked the better (or an equal) peer in {better}/{len(coreg)} Co-Reg runs "
            f"({strict_better}/{len(strict)} where the peers differ); mean cost of the choice vs the better "
            f"peer: {statistics.mean(b - c for b, c in zip(best, chosen, strict=True)):.4f}"
        )


if __name__ == "__main__":
    main()
