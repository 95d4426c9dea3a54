"""Coverage and mean set size of the simulated annotator with 0, 1 and 5 example images per class (#12).

Examples are drawn from digits:test (never training items) and written as class folders; the annotation is
of digits:train with each simulator preset, over seeds (the simulator's seed; the examples are the first k
test images of each class). Prints one table and writes it as JSON (`--out`).

    python benchmarks/examples_effect.py --seeds 0,1,2 --out benchmarks/results/examples_effect.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from harness import machine_line, parser, write_result

from coreg_edge.annotate import annotate
from coreg_edge.data import open_source


def write_examples(folder: Path, per_class: int) -> Path:
    source = open_source("digits:test")
    for c in range(10):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(source.labels == c)[:per_class]:
            source.load(int(i)).save(folder / str(c) / f"{i}.png")
    return folder


def main() -> None:
    p = parser(__doc__, name="examples_effect")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--shots", default="0,1,5", help="example images per class")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coreg-examples-"))
    rows = []
    for preset in ("easy", "hard"):
        for shots in (int(k) for k in args.shots.split(",")):
            folder = write_examples(work / f"examples-{shots}", shots) if shots else None
            stats = []
            for seed in (int(s) for s in args.seeds.split(",")):
                ann = annotate("digits", annotator="simulated", preset=preset, seed=seed, quiet=True,
                               examples=str(folder) if folder else None)  # fmt: skip
                entry = ann.stats()
                if folder:
                    entry["voter_accuracy"] = float((ann.votes[:, -1] == ann.labels).mean())
                stats.append(entry)
            mean = {key: float(np.mean([s[key] for s in stats])) for key in ("coverage", "mean_candidates")}
            if folder:
                mean["voter_accuracy"] = float(np.mean([s["voter_accuracy"] for s in stats]))
            rows.append({"preset": preset, "examples_per_class": shots, **mean, "seeds": len(stats)})
    print(machine_line())
    print("simulated annotator on digits:train, examples from digits:test, mean over seeds")
    print("| preset | examples per class | coverage | mean set size | examples' vote accuracy |")
    print("|---|---|---|---|---|")
    for r in rows:
        acc = f"{r['voter_accuracy']:.3f}" if "voter_accuracy" in r else "-"
        print(f"| {r['preset']} | {r['examples_per_class']} | {r['coverage']:.3f} | {r['mean_candidates']:.2f} | {acc} |")
    write_result(args.out, {"rows": rows}, args)


if __name__ == "__main__":
    main()
