"""Seconds per epoch: Co-Reg (warm-up and Co-Reg epochs) vs supervised, same backbone, batch and data.

    python benchmarks/train_cost.py [--backbone test_resnet] [--image-size 8] [--batch-size 32] [--warmup 10]
                                    [--out benchmarks/results/train_cost_test_resnet_8px.json]

Trains on digits with synthetic candidate sets (q=0.3, eta=0.2) through the library's `train()`, one method
after the other in this one process, and prints a table with the ratio and the passes that explain it.
Defaults are the demo's (recipes/digits.toml). A Co-Reg epoch's cost grows with the share of items in P
(one step per B items of P), so the warm-up is long enough (`--warmup`) for a realistic division.
Not a test: timings on shared machines are noisy; run it on an idle machine.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from harness import machine_line, parser, record, write_result

from coreg_edge.annotate import annotate
from coreg_edge.training import run_folder as rf
from coreg_edge.training.trainer import train


def main() -> None:
    p = parser(__doc__, name="train_cost", suffix="{backbone}_{image_size}px")
    p.add_argument("--backbone", default="test_resnet")
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=10, help="warm-up epochs before the two Co-Reg epochs")
    p.add_argument("--json", action="store_true", help="print the result file's JSON instead of the table")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coreg-cost-"))
    ann = work / "digits.npz"
    annotate("digits", ann, annotator="synthetic", partial_rate=0.3, noise_rate=0.2, quiet=True)
    common = dict(backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size, quiet=True)
    train(ann, work / "sup", method="supervised", epochs=2, **common)
    # `--warmup` epochs, then 2 Co-Reg epochs: the second has every loss on (loss_start=1).
    w = args.warmup
    train(
        ann,
        work / "coreg",
        method="coreg",
        epochs=w + 2,
        warmup=w,
        coreg={"loss_start": 1, "lr": 0.05},
        **common,
    )
    sup = rf.read_metrics(work / "sup")
    coreg = rf.read_metrics(work / "coreg")
    supervised_s = min(r["seconds"] for r in sup)
    warm_s = min(r["seconds"] for r in coreg[:w])
    coreg_first, coreg_full = coreg[w]["seconds"], coreg[w + 1]["seconds"]
    p_share = coreg[w + 1]["loss"]["a"]["p_share"]
    rows = [
        ("supervised (1 network)", supervised_s, "1 fwd+bwd per item (weak view)"),
        ("Co-Reg warm-up (2 networks)", warm_s, "2 fwd+bwd per item (one per network)"),
        ("Co-Reg epoch, L_cr + L_prot", coreg_first,
         "per network and P item (+1 U item): 4 fwd+bwd (MixUp of 2 strong views of P and U), "
         "8 no-grad fwd (own 2 weak P+U, peer 2 weak U, key strong 2 P+U), + 1 eval fwd (division)"),
        ("Co-Reg epoch, all losses", coreg_full, "as above + 2 fwd+bwd (strong view 1 of P and U: contrastive queries)"),
    ]  # fmt: skip
    result = {"p_share": p_share,
              "rows": [{"what": r[0], "seconds": r[1], "x_supervised": r[1] / supervised_s} for r in rows]}  # fmt: skip
    write_result(args.out, result, args)
    if args.json:
        print(json.dumps(record(result, args)))
        return
    print(machine_line(load=True))
    print(f"backbone {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
          f"digits train (1,365 items), P share {p_share:.0%}")  # fmt: skip
    print("| epoch | seconds | x supervised | passes |")
    print("|---|---|---|---|")
    for what, seconds, passes in rows:
        print(f"| {what} | {seconds:.1f} | {seconds / supervised_s:.1f}x | {passes} |")


if __name__ == "__main__":
    main()
