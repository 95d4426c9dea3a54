"""How many items of unknown classes `annotate --reject P` leaves out, and how many known ones it costs (#12).

The task: annotate digits with classes 0-7 only while 8s and 9s are in the folder. A CLIP given 8 class
prompts answers with a softmax over those 8; the simulated annotator is run on all 10 classes and its
zero-shot probabilities are restricted to classes 0-7 and renormalised (an approximation of the 8-prompt
softmax: the renormalisation is applied to the template-averaged probabilities, not per template). An item
is rejected when its best restricted probability is below P, exactly the rule `annotate --reject P` applies.

    python benchmarks/reject_effect.py --out benchmarks/results/reject_effect.json
"""

from __future__ import annotations

import numpy as np
from harness import machine_line, parser, write_result

from coreg_edge.annotate import annotate

KNOWN = 8  # classes 0-7 are the annotation's; 8 and 9 are "none of these"


def main() -> None:
    p = parser(__doc__, name="reject_effect")
    p.add_argument("--thresholds", default="0.3,0.5,0.7,0.9")
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    rows = []
    for preset in ("easy", "hard"):
        for threshold in (float(t) for t in args.thresholds.split(",")):
            inside, outside = [], []
            for seed in (int(s) for s in args.seeds.split(",")):
                ann = annotate("digits", annotator="simulated", preset=preset, seed=seed, quiet=True)
                probs = ann.zero_shot_probs[:, :KNOWN]
                score = (probs / probs.sum(1, keepdims=True)).max(1)
                rejected = score < threshold
                known = ann.labels < KNOWN
                inside.append(float(rejected[known].mean()))
                outside.append(float(rejected[~known].mean()))
            rows.append({"preset": preset, "threshold": threshold, "rejected_inside": float(np.mean(inside)),
                         "rejected_outside": float(np.mean(outside)), "seeds": len(inside)})  # fmt: skip
    print(machine_line())
    print("simulated annotator on digits:train, classes 0-7 annotated, 8s and 9s present; mean over seeds")
    print("| preset | --reject P | known items (0-7) rejected | unknown items (8, 9) rejected |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['threshold']:g} | {r['rejected_inside']:.1%} | {r['rejected_outside']:.1%} |")
    write_result(args.out, {"rows": rows}, args)


if __name__ == "__main__":
    main()
