"""Quality vs baselines on digits with synthetic candidate sets: same backbone, views, epochs and batch.

    python benchmarks/quality.py [--seeds 0,1,2] [--settings 0.3:0.2,0.1:0.1] [--methods coreg,proden,...]
                                 [--backbone test_resnet] [--image-size 16] [--epochs 20] [--warmup 10]
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
import statistics
import tempfile
import time
from pathlib import Path

from coreg_edge.annotate import annotate
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
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--queue-size", type=int, default=1024)
    parser.add_argument(
        "--strong-augment", default="weak", help="strong views (weak: the digits recipe's choice)"
    )
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coreg-quality-"))
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
                summary = train(
                    ann, work / f"{ann.stem}-{method}", method=method, backbone=args.backbone,
                    image_size=args.image_size, epochs=args.epochs, warmup=args.warmup if method == "coreg" else None,
                    batch_size=args.batch_size, seed=seed, eval_data="digits:test", quiet=True,
                    strong_augment=args.strong_augment,
                    coreg={"lr": args.lr, "queue_size": args.queue_size},
                )  # fmt: skip
                acc = summary["test_accuracy"]
                row = {"q": q, "eta": eta, "seed": seed, "method": method, "selected": summary["selected"],
                       "test_accuracy": acc, "seconds": time.perf_counter() - began}  # fmt: skip
                results.append(row)
                print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print_table(results)


def print_table(results: list[dict]) -> None:
    print("\n| q, eta | method | selected peer (mean +- std) | ensemble | seconds |")
    print("|---|---|---|---|---|")
    for q, eta in sorted({(r["q"], r["eta"]) for r in results}, reverse=True):
        for method in METHODS:
            rows = [r for r in results if r["q"] == q and r["eta"] == eta and r["method"] == method]
            if not rows:
                continue
            sel = [r["test_accuracy"]["selected"] for r in rows]
            ens = [r["test_accuracy"]["ensemble"] for r in rows if r["test_accuracy"]["ensemble"] is not None]
            std = statistics.stdev(sel) if len(sel) > 1 else 0.0
            ens_text = f"{statistics.mean(ens):.4f}" if ens else "-"
            secs = statistics.mean(r["seconds"] for r in rows)
            print(
                f"| {q}, {eta} | {method} | {statistics.mean(sel):.4f} +- {std:.4f} | {ens_text} | {secs:.0f} |"
            )
    coreg = [r for r in results if r["method"] == "coreg"]
    if coreg:
        better = sum(
            r["test_accuracy"][r["selected"]] >= max(r["test_accuracy"]["a"], r["test_accuracy"]["b"])
            for r in coreg
        )
        print(
            f"\nlabel-free selection picked the better (or an equal) peer in {better}/{len(coreg)} Co-Reg runs"
        )


if __name__ == "__main__":
    main()
