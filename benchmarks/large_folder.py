"""A whole training on a large generated photo folder at 96 px: time and peak memory against N (issue #15).

    python benchmarks/large_folder.py [--runs 10000:memory,10000:disk,100000:disk] [--size 96]
                                      [--backbone test_vit] [--batch-size 64] [--epochs 2] [--work DIR]
                                      [--out benchmarks/results/large_folder.json]

Each run is N photos (photo_size.py's coloured shapes, 4 classes, JPEG 96 x 128) annotated by the simulator,
then `coreg-edge train` from scratch at 96 px (1 warm-up epoch, then Co-Reg) with `--cache memory|disk`, to
the end: selection, peer files, checkpoint. Each stage is its own process; its peak RSS is its own. The
folders, annotations and disk caches are kept in `--work` (made once per N and reused, as a later run's is).

The batch is fixed (`--batch-size`, 64) so that N is the only thing that changes: the automatic batch grows
with N (up to 256), and with it the activations' memory. The default backbone is timm's `test_vit` (patch 16:
36 tokens at 96 px), the cheapest test network at this size: a 100k-item Co-Reg epoch still took 12 minutes
on 2 cores, and test_resnet's costs about 3 times as much. No accuracy claim: the shapes are not photos; this
measures that memory stays bounded while N grows, and what an epoch costs. Prints one table and the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from harness import machine_line, parser, write_result
from photo_size import make_folder, stage


def parse_runs(text: str) -> list[tuple[int, str]]:
    runs = []
    for item in text.split(","):
        count, _, cache = item.partition(":")
        runs.append((int(count), cache or "auto"))
    return runs


def one_run(work: Path, count: int, cache: str, args: argparse.Namespace) -> dict:
    folder = work / f"photos-{count}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        make_folder(folder, count, args.size)
        (folder / ".complete").touch()
    annotation = work / f"ann-{count}.npz"
    rows = []
    if not annotation.exists():
        rows.append(stage("annotate (simulated)", ["annotate", str(folder), "--annotator", "simulated",
                                                   "--preset", "easy", "--out", str(annotation), "-q"], work))  # fmt: skip
    run = work / f"run-{count}-{cache}"
    shutil.rmtree(run, ignore_errors=True)
    train = ["train", str(annotation), "--backbone", args.backbone, "--image-size", str(args.size), "--epochs",
             str(args.epochs), "--warmup", "1", "--batch-size", str(args.batch_size), "--cache", cache, "--out", str(run), "-q"]  # fmt: skip
    rows.append(stage("train", train, work))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs: dict[str, list[float]] = {}
    for record in metrics:
        epochs.setdefault(record["phase"], []).append(record["seconds"])
    train_row = rows[-1]
    return {
        "items": count, "cache": cache, "stages": rows, "epoch_seconds": epochs,
        "train_seconds": train_row["seconds"], "train_peak_rss_mib": train_row["peak_rss_mib"],
        "outside_epochs_s": train_row["seconds"] - sum(sum(v) for v in epochs.values()),
        "finished": (run / "selection.json").exists(),
    }  # fmt: skip


def main() -> None:
    p = parser(__doc__, name="large_folder")
    p.add_argument("--runs", default="10000:memory,10000:disk,100000:disk", help="N:cache, comma-separated")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--backbone", default="test_vit")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--work", default=None, help="folder for the photos, annotations, runs (kept)")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="coreg-large-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["COREG_EDGE_CACHE"] = str(work / "cache")  # the children's disk cache, kept with the folders
    results = []
    for count, cache in parse_runs(args.runs):
        results.append(one_run(work, count, cache, args))
        print(f"done: {count} items, cache {cache}: {results[-1]['train_seconds']:.0f} s", flush=True)
    write_result(args.out, {"threads": os.environ.get("OMP_NUM_THREADS"), "runs": results}, args)
    print(machine_line(load=True))
    print(f"{args.backbone} at {args.size} px, batch {args.batch_size}, {args.epochs} epochs (1 warm-up), from scratch")
    print("\n| N | cache | train wall s | warm-up epoch s | Co-Reg epoch s | outside epochs s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        warm = r["epoch_seconds"].get("warmup", [float("nan")])
        coreg = r["epoch_seconds"].get("coreg", [float("nan")])
        print(f"| {r['items']:,} | {r['cache']} | {r['train_seconds']:.0f} | "
              f"{sum(warm) / len(warm):.1f} | {sum(coreg) / len(coreg):.1f} | {r['outside_epochs_s']:.0f} | "
              f"{r['train_peak_rss_mib']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
