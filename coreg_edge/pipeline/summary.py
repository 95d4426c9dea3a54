"""RUN/summary.json (the headline numbers of every stage) and the table `coreg-edge run` prints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coreg_edge import __version__
from coreg_edge.pipeline.layout import (
    ANNOTATION_FILE,
    BENCH_FILE,
    EXPORT_DIR,
    STAGES,
    STATE_FILE,
    TRAIN_DIR,
    _read,
)
from coreg_edge.recipe import Recipe


def _annotation_summary(path: Path) -> dict[str, Any]:
    from coreg_edge.annotation_file import load

    stats = load(path).stats()
    return {
        "path": ANNOTATION_FILE,
        **{
            k: stats[k]
            for k in ("num_items", "num_classes", "mean_candidates", "coverage", "zero_shot_accuracy")
        },
    }


def build_summary(
    run: Path, recipe: Recipe, report: Mapping[str, Any], error: str | None = None
) -> dict[str, Any]:
    """summary.json: headline numbers of every stage, from the files the stages wrote."""
    summary: dict[str, Any] = {
        "recipe": recipe.name,
        "recipe_source": recipe.source,
        "run": str(run.resolve()),
        "coreg_edge_version": __version__,
        "ok": error is None,
        "error": error,
        "annotation": None,
        "train": None,
        "export": None,
        "bench": None,
        "deployable": None,
        "stages": {
            stage: dict(report.get(stage) or {"status": "not run", "seconds": 0.0}) for stage in STAGES
        },
    }
    records = (_read(run / STATE_FILE) or {}).get("stages", {})
    for stage, info in summary["stages"].items():  # how long the stage took when it made its outputs
        info["produced_in_seconds"] = (records.get(stage) or {}).get("seconds")
    summary["seconds"] = round(sum(s["seconds"] for s in summary["stages"].values()), 3)
    if (run / ANNOTATION_FILE).exists():
        summary["annotation"] = _annotation_summary(run / ANNOTATION_FILE)
    selection = _read(run / TRAIN_DIR / "selection.json")
    if selection:
        summary["train"] = {
            "path": TRAIN_DIR,
            "method": selection.get("method"),
            "backbone": selection.get("backbone"),
            "epochs": selection.get("epochs"),
            "selected": selection.get("selected"),
            "reason": selection.get("reason"),
            "test_accuracy": selection.get("test_accuracy"),
            "best_epoch": selection.get("best_epoch"),
        }
    parity = _read(run / EXPORT_DIR / "parity.json")
    if parity:
        accuracy = parity.get("test_accuracy") or {}
        export: dict[str, Any] = {"path": EXPORT_DIR, "ok": parity.get("ok"), "reason": parity.get("reason")}
        for kind, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            checks = (parity.get("checks") or {}).get(name)
            if checks is None:
                export[kind] = None
                continue
            record = (parity.get("files") or {}).get(name) or {}
            # published by this export (older reports have no "published": then its file is this one)
            published = (run / EXPORT_DIR / name).exists() and record.get("published", parity.get("ok"))
            export[kind] = {
                "path": str(Path(EXPORT_DIR) / name) if published else None,
                "bytes": record.get("bytes"),
                "test_accuracy": accuracy.get(kind),
                "parity_ok": all(c.get("ok") for c in checks.values()) and not parity.get("problems"),
            }
        int8 = parity.get("int8") or {}
        if export.get("int8") and int8:  # which CPU the int8 file is for, and how that was checked
            export["int8"]["target"] = (int8.get("target") or {}).get("name")
            export["int8"]["checked"] = int8.get("note")
        summary["export"] = export
        for kind in ("int8", "fp32"):
            entry = export.get(kind)
            if entry and entry["path"] and entry["parity_ok"]:
                summary["deployable"] = entry["path"]
                break
    bench = _read(run / BENCH_FILE) if summary["stages"]["bench"]["status"] != "not run" else None
    if bench:
        row: dict[str, Any] = {
            "fp32_ms_b1": None,
            "int8_ms_b1": None,
            "fp32_ms_b32": None,
            "int8_ms_b32": None,
        }
        for kind, part in (("fp32", bench), ("int8", bench.get("vs"))):
            for result in (part or {}).get("results", []):
                row[f"{kind}_ms_b{result['batch_size']}"] = result["p50_ms"]
        row["provider"] = bench.get("provider")
        row["threads"] = bench.get("threads")
        summary["bench"] = row
    return summary


def _fmt(value: Any, spec: str = ".4f", missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The table `coreg-edge run` prints at the end."""
    run = Path(summary["run"])
    lines = [f"coreg-edge run {summary['recipe']} -> {run} ({summary['seconds']:.1f} s this time)"]
    lines.append(f"  {'stage':<9} {'status':<11} {'seconds':>8} {'when made':>10}")
    for stage, info in summary["stages"].items():
        made = info.get("produced_in_seconds")
        lines.append(
            f"  {stage:<9} {info['status']:<11} {info['seconds']:>8.1f} {_fmt(made, '.1f', '-'):>10}"
        )
    ann = summary.get("annotation")
    if ann:
        coverage = "n/a" if ann["coverage"] is None else f"{ann['coverage']:.1%}"
        lines.append(
            f"annotation  {ann['num_items']} items, {ann['num_classes']} classes, "
            f"mean set size {ann['mean_candidates']:.2f}, true label in set {coverage}"
        )
    train = summary.get("train")
    if train:
        acc = train.get("test_accuracy") or {}
        lines.append(
            f"train       {train['method']} {train['backbone']}, {train['epochs']} epochs; selected peer "
            f"{train['selected']} ({train['reason']})"
        )
        lines.append(
            "test acc    "
            + ", ".join(f"{k} {_fmt(acc.get(k))}" for k in ("a", "b", "ensemble", "selected") if k in acc)
        )
    export = summary.get("export")
    bench = summary.get("bench") or {}
    if export:
        lines.append(
            f"  {'model':<6} {'file':<24} {'MB':>7} {'test acc':>9} {'parity':>7} {'p50 b1':>9} {'p50 b32':>9}"
        )
        for kind in ("fp32", "int8"):
            entry = export.get(kind)
            if not entry:
                continue
            size = "n/a" if entry["bytes"] is None else f"{entry['bytes'] / 1e6:.2f}"
            lines.append(
                f"  {kind:<6} {entry['path'] or '(rejected)':<24} {size:>7} {_fmt(entry['test_accuracy']):>9} "
                f"{'ok' if entry['parity_ok'] else 'FAIL':>7} {_fmt(bench.get(f'{kind}_ms_b1'), '.3f') + ' ms':>9} "
                f"{_fmt(bench.get(f'{kind}_ms_b32'), '.3f') + ' ms':>9}"
            )
        int8 = export.get("int8") or {}
        if int8.get("target"):
            lines.append(f"  int8 for {int8['target']} CPUs: {int8.get('checked')}")
    if summary.get("error"):
        lines.append(f"FAILED: {summary['error']}")
    if summary.get("deployable"):
        lines.append(f"deployable model: {run / summary['deployable']}")
        lines.append(f"  try it: coreg-edge predict {run / summary['deployable']} IMAGE...")
    return "\n".join(lines)
