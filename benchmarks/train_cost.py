"""Seconds per epoch: Co-Reg (warm-up and Co-Reg epochs) vs supervised, same backbone, batch and data.

    python benchmarks/train_cost.py [--backbone resnet10t] [--image-size 16] [--batch-size 32]

Trains on digits with synthetic candidate sets (q=0.3, eta=0.2) through the library's `train()`, one method
after the other in this one process, and prints a table with the ratio and the passes that explain it.
Not a test: timings on shared machines are noisy; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from coreg_edge.annotate import annotate
from coreg_edge.training import run_folder as rf
from coreg_edge.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coreg-cost-"))
    ann = work / "digits.npz"
    annotate("digits", ann, annotator="synthetic", partial_rate=0.3, noise_rate=0.2, quiet=True)
    common = dict(backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size, quiet=True)
    train(ann, work / "sup", method="supervised", epochs=2, **common)
    # 1 warm-up epoch, then 2 Co-Reg epochs: the second has every loss on (loss_start=1).
    train(ann, work / "coreg", method="coreg", epochs=3, warmup=1, coreg={"loss_start": 1}, **common)
    sup = rf.read_metrics(work / "sup")
    coreg = rf.read_metrics(work / "coreg")
    supervised_s = min(r["seconds"] for r in sup)
    warm_s = coreg[0]["seconds"]
    coreg_first, coreg_full = coreg[1]["seconds"], coreg[2]["seconds"]
    p_share = coreg[2]["loss"]["a"]["p_share"]
    rows = [
        ("supervised (1 network)", supervised_s, "1 fwd+bwd per item (weak view)"),
        ("Co-Reg warm-up (2 networks)", warm_s, "2 fwd+bwd per item (one per network)"),
        ("Co-Reg epoch, L_cr + L_prot", coreg_first,
         "per network and P item (+1 U item): 4 fwd+bwd (MixUp of 2 strong views of P and U), "
         "8 no-grad fwd (own 2 weak P+U, peer 2 weak U, key strong 2 P+U), + 1 eval fwd (division)"),
        ("Co-Reg epoch, all losses", coreg_full, "as above + 2 fwd+bwd (strong view 1 of P and U: contrastive queries)"),
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"rows": [{"what": r[0], "seconds": r[1]} for r in rows], "p_share": p_share}))
        return
    print(f"backbone {args.backbone}, {args.image_size} px, batch {args.batch_size}, digits train (1,365 items), "
          f"P share {p_share:.0%}")  # fmt: skip
    print("| epoch | seconds | x supervised | passes |")
    print("|---|---|---|---|")
    for what, seconds, passes in rows:
        print(f"| {what} | {seconds:.1f} | {seconds / supervised_s:.1f}x | {passes} |")


if __name__ == "__main__":
    main()
