"""`predict --reject` on digits: trained on classes 0-7 only, how many test 8s and 9s it answers "none of these",
and how many known test digits it wrongly rejects (#12 item 4).

The annotation is the demo's synthetic one (q=0.3, eta=0.2) restricted to items and columns of classes 0-7;
training uses the demo recipe's settings (test_resnet, 8 px, 40 epochs, warm-up 15); export writes the
run's calibrated threshold (95% of held-out items pass); predict runs on all 360 digits:test images.

    OMP_NUM_THREADS=1 python benchmarks/reject_predict.py --out benchmarks/results/reject_predict.json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from harness import machine_line, parser, write_result

from coreg_edge.annotate import annotate
from coreg_edge.annotation_file import Annotation
from coreg_edge.cli import cli
from coreg_edge.data import open_source

KNOWN = 8


def main() -> None:
    p = parser(__doc__, name="reject_predict")
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coreg-reject-"))
    full = annotate("digits", annotator="synthetic", partial_rate=0.3, noise_rate=0.2, quiet=True)
    rows = np.flatnonzero(full.labels < KNOWN)
    cands = full.candidates[rows][:, :KNOWN]
    empty = ~cands.any(1)  # sets that held only 8 or 9 (noise): their own label stands in
    cands[empty, full.labels[rows][empty]] = True
    ann = Annotation(candidates=cands, labels=full.labels[rows], item_ids=[full.item_ids[i] for i in rows],
                     class_names=full.class_names[:KNOWN], annotator=full.annotator, data=full.data)  # fmt: skip
    ann.save(work / "ann.npz")
    runner = CliRunner()
    train = ["train", str(work / "ann.npz"), "--out", str(work / "run"), "--backbone", "test_resnet",
             "--image-size", "8", "--epochs", str(args.epochs), "--warmup", str(max(1, args.epochs * 15 // 40)),
             "--batch-size", "32", "--strong-augment", "weak", "--set", "lr=0.05", "--set", "queue_size=1024", "-q"]  # fmt: skip
    assert runner.invoke(cli, train).exit_code == 0
    assert runner.invoke(cli, ["export", str(work / "run"), "--out", str(work / "dist"), "-q"]).exit_code == 0
    test = open_source("digits:test")
    images = work / "test"
    images.mkdir()
    for i in range(len(test)):
        test.load(i).save(images / f"{i:03d}.png")
    result = runner.invoke(cli, ["predict", str(work / "dist" / "model.onnx"), str(images), "--format", "json", "--reject"])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    truth = {f"{i:03d}.png": int(test.labels[i]) for i in range(len(test))}
    rejected = {Path(line["path"]).name: line["label"] is None for line in lines}
    known = [rejected[name] for name, label in truth.items() if label < KNOWN]
    unknown = [rejected[name] for name, label in truth.items() if label >= KNOWN]
    selection = json.loads((work / "run" / "selection.json").read_text())
    threshold = selection["reject_threshold"][selection["selected"]]
    answer = {"threshold": threshold, "known_rejected": float(np.mean(known)), "unknown_rejected": float(np.mean(unknown)),
              "known_items": len(known), "unknown_items": len(unknown)}  # fmt: skip
    print(machine_line())
    print(f"trained on digits 0-7; predict --reject (threshold {threshold:.3f}, 95% of held-out items pass) on "
          f"digits:test: known digits rejected {answer['known_rejected']:.1%} of {len(known)}, "
          f"unknown 8s and 9s rejected {answer['unknown_rejected']:.1%} of {len(unknown)}")
    write_result(args.out, answer, args)


if __name__ == "__main__":
    main()
