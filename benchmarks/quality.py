"""Quality vs baselines on digits: every method on the same annotation file, backbone and budget, over seeds,
with the train command's own defaults and with the demo recipe's settings.

    python benchmarks/quality.py [--seeds 0,1,2] [--annotations uniform:0.3:0.2,simulated:easy,simulated:hard]
                                 [--configs defaults,recipe] [--methods coreg,proden,cc,ce-top1,supervised]
                                 [--out benchmarks/results/quality.json]
    python benchmarks/quality.py --merge FILE [FILE ...]      # tables only, no training

Annotations: `uniform:Q:ETA` is the field's synthetic protocol (partial rate q, noise rate eta);
`simulated:PRESET` the instance-dependent simulator (docs/ALGORITHM.md#simulated).
Configs: `defaults` = `coreg-edge train ANN --backbone test_resnet --eval digits:test --seed S`, nothing else
(every other setting is the train command's own default or automatic choice); `recipe` = recipes/digits.toml's
[train] settings (the demo's). Baselines get the same epochs, batch and views; supervised (true labels, the
upper bound) trains once per config and seed (it does not read the candidate sets) and is reported for every
annotation. Test accuracy on digits:test is reported only, never used to choose. Prints one table per
annotation and the issue's checks. Long (about 40 minutes on 2 cores): run it in the background, never in CI.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import tomllib
from harness import machine_line, parser, write_result

from coreg_edge.annotate import annotate
from coreg_edge.annotation_file import load as load_annotation
from coreg_edge.training.trainer import train

METHODS = ("coreg", "proden", "cc", "ce-top1", "supervised")
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits.toml"


def annotation_call(spec: str) -> dict:
    """'uniform:0.3:0.2' or 'simulated:hard' -> annotate() keywords."""
    kind, *args = spec.split(":")
    if kind == "uniform":
        return {"annotator": "synthetic", "partial_rate": float(args[0]), "noise_rate": float(args[1])}
    if kind == "simulated":
        return {"annotator": "simulated", "preset": args[0]}
    raise SystemExit(f"--annotations: unknown kind {kind!r} in {spec!r} (uniform:Q:ETA or simulated:PRESET)")


def config_options(config: str) -> dict:
    """The train() keywords of a config, beyond method, seed and --eval."""
    if config == "defaults":
        return {"backbone": "test_resnet"}
    if config == "recipe":
        section = tomllib.loads(RECIPE.read_text())["train"]
        options = {k: v for k, v in section.items() if k not in ("method", "coreg")}
        return {**options, "coreg": dict(section.get("coreg", {}))}
    raise SystemExit(f"--configs: {config!r} is not defaults or recipe")


def main() -> None:
    p = parser(__doc__, name="quality")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--annotations", default="uniform:0.3:0.2,simulated:easy,simulated:hard")
    p.add_argument("--configs", default="defaults,recipe")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--merge", nargs="+", metavar="FILE", help="no training: print the tables of results "
                   "files (a later file's row replaces an earlier one for the same annotation, config, "
                   "seed and method)")  # fmt: skip
    args = p.parse_args()
    if args.merge:
        rows: dict[tuple, dict] = {}
        stats: dict[str, dict] = {}
        for name in args.merge:
            data = json.loads(Path(name).read_text())
            stats.update(data["annotations"])
            for r in data["results"]:
                rows[(r["annotation"], r["config"], r["seed"], r["method"])] = r
        print_tables(list(rows.values()), stats)
        return
    work = Path(tempfile.mkdtemp(prefix="coreg-quality-"))
    print(f"work folder: {work}", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    results: list[dict] = []
    stats: dict[str, dict] = {}
    for spec in args.annotations.split(","):
        per_seed = []
        for seed in seeds:
            ann = work / f"{spec.replace(':', '_')}-s{seed}.npz"
            annotate("digits", ann, seed=seed, quiet=True, **annotation_call(spec))
            per_seed.append(load_annotation(ann).stats())
            for config in args.configs.split(","):
                for method in methods:
                    if method == "supervised" and spec != args.annotations.split(",")[0]:
                        continue  # the first annotation's run stands for all (true labels only)
                    results.append(run_one(work, ann, spec, config, seed, method))
                    print(json.dumps(results[-1]), flush=True)
        stats[spec] = {k: statistics.mean(s[k] for s in per_seed) for k in ("mean_candidates", "coverage",
                       "zero_shot_accuracy") if all(s.get(k) is not None for s in per_seed)}  # fmt: skip
        write_result(args.out, {"annotations": stats, "results": results}, args)
    print(machine_line(load=True))
    print_tables(results, stats)


def run_one(work: Path, ann: Path, spec: str, config: str, seed: int, method: str) -> dict:
    began = time.perf_counter()
    run = work / f"{ann.stem}-{config}-{method}"
    options = config_options(config)
    train(ann, run, method=method, seed=seed, eval_data="digits:test", quiet=True, **options)
    selection = json.loads((run / "selection.json").read_text())
    return {"annotation": spec, "config": config, "seed": seed, "method": method,
            "selected": selection["selected"], "test_accuracy": selection["test_accuracy"],
            "kept": selection.get("kept"), "stopped_early": selection.get("stopped_early"),
            "warmup_epochs": selection.get("warmup_epochs"), "chosen": selection.get("chosen"),
            "seconds": time.perf_counter() - began}  # fmt: skip


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {std:.4f}"


def print_tables(results: list[dict], stats: dict[str, dict]) -> None:
    """One table per annotation: each config's methods, then the checks the quality issue asks for."""
    supervised = {(r["config"], r["seed"]): r for r in results if r["method"] == "supervised"}
    for spec in dict.fromkeys(r["annotation"] for r in results):
        st = stats.get(spec, {})
        described = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in st.items())
        print(f"\n### {spec} ({described})\n")
        print("| config | method | selected peer (mean +- std) | ensemble | runs | median seconds |")
        print("|---|---|---|---|---|---|")
        means: dict[tuple, float] = {}
        for config in dict.fromkeys(r["config"] for r in results):
            for method in METHODS:
                rows = [r for r in results if (r["annotation"], r["config"], r["method"]) == (spec, config, method)]
                if method == "supervised" and not rows:
                    rows = [r for (c, _), r in supervised.items() if c == config]
                if not rows:
                    continue
                selected = [r["test_accuracy"]["selected"] for r in rows]
                ensemble = [r["test_accuracy"]["ensemble"] for r in rows if r["test_accuracy"]["ensemble"]]
                means[(config, method)] = statistics.mean(selected)
                seconds = statistics.median(r["seconds"] for r in rows)
                print(f"| {config} | {method} | {_mean_std(selected)} | {_mean_std(ensemble)} | {len(rows)} | "
                      f"{seconds:.0f} |")  # fmt: skip
        for config in dict.fromkeys(c for c, _ in means):
            print(f"\n{config}: " + "; ".join(_checks(means, config, st.get("zero_shot_accuracy"))))


def _checks(means: dict[tuple, float], config: str, zero_shot: float | None) -> list[str]:
    coreg = means.get((config, "coreg"))
    if coreg is None:
        return ["no Co-Reg runs"]
    out = []
    for baseline in ("proden", "cc", "ce-top1"):
        if (config, baseline) in means:
            gap = coreg - means[(config, baseline)]
            out.append(f"vs {baseline} {gap * 100:+.1f} pts {'ok' if gap > 0 else 'FAILS'}")
    if zero_shot is not None and zero_shot < 0.85:
        gap = coreg - zero_shot
        out.append(f"vs zero-shot {gap * 100:+.1f} pts {'ok' if gap >= 0.10 else 'FAILS (needs +10)'}")
    if (config, "supervised") in means:
        out.append(f"vs supervised {(coreg - means[(config, 'supervised')]) * 100:+.1f} pts")
    return out


if __name__ == "__main__":
    main()
