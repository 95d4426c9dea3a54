"""RUN/summary.json (the headline numbers of every stage) and the table `coreg-edge run` prints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coreg_edge import __version__
from coreg_edge.annotation_file import load
from coreg_edge.formats import FORMATS, file_passed
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
        "report": None,  # report.html, set when the run wrote it (last)
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
        summary["export"] = _export_summary(run, parity)
        formats = summary["export"]["formats"]
        for name in DEPLOY_ORDER:  # the smallest file that passed, of the formats a CPU device runs
            entry = formats.get(name)
            if entry and entry["path"] and entry["parity_ok"]:
                summary["deployable"] = entry["path"]
                break
    bench = _read(run / BENCH_FILE) if summary["stages"]["bench"]["status"] != "not run" else None
    if bench:
        summary["bench"] = _bench_summary(bench)
    return summary


DEPLOY_ORDER = ("int8", "fp32")  # what `deployable` names: a CPU device's file (fp16 and .ort are for others)


def _export_summary(run: Path, parity: Mapping[str, Any]) -> dict[str, Any]:
    """Per format: its file (None when not published), size, test accuracy and parity result."""
    accuracy = parity.get("test_accuracy") or {}
    export: dict[str, Any] = {"path": EXPORT_DIR, "ok": parity.get("ok"), "reason": parity.get("reason"),
                              "formats": {}}  # fmt: skip
    for row in FORMATS:
        checks = (parity.get("checks") or {}).get(row.file_name)
        if checks is None:
            continue
        record = (parity.get("files") or {}).get(row.file_name) or {}
        # published by this export (older reports have no "published": then its file is this one)
        published = (run / EXPORT_DIR / row.file_name).exists() and record.get("published", parity.get("ok"))
        export["formats"][row.name] = {
            "path": str(Path(EXPORT_DIR) / row.file_name) if published else None,
            "bytes": record.get("bytes"),
            "test_accuracy": accuracy.get(row.name),
            "parity_ok": bool(file_passed(parity, row.file_name)),
        }
    int8 = parity.get("int8") or {}
    if "int8" in export["formats"] and int8:  # which CPU the int8 file is for, and how that was checked
        export["int8_target"] = (int8.get("target") or {}).get("name")
        export["int8_checked"] = int8.get("note")
    return export


def _bench_summary(bench: Mapping[str, Any]) -> dict[str, Any]:
    """p50 per format and batch size ({format: {batch size: ms}}), and where it was measured; also the
    contract's flat keys, `{format}_ms_b{N}` (fp32_ms_b1, int8_ms_b32, ...)."""
    p50 = {
        row.get("format"): {str(r["batch_size"]): r["p50_ms"] for r in row.get("results", [])}
        for row in bench.get("formats") or []
    }
    flat = {f"{name}_ms_b{size}": ms for name, times in p50.items() for size, ms in times.items()}
    return {**flat, "p50_ms": p50, "cpu": bench.get("cpu"), "provider": bench.get("provider"),
            "threads": bench.get("threads")}  # fmt: skip


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
        p50 = bench.get("p50_ms") or {}
        lines.append(
            f"  {'format':<9} {'file':<24} {'MB':>7} {'test acc':>9} {'parity':>7} {'p50 b1':>10} {'p50 b32':>10}"
        )
        for name, entry in export["formats"].items():
            size = "n/a" if entry["bytes"] is None else f"{entry['bytes'] / 1e6:.2f}"
            times = p50.get(name) or {}
            lines.append(
                f"  {name:<9} {entry['path'] or '(rejected)':<24} {size:>7} {_fmt(entry['test_accuracy']):>9} "
                f"{'ok' if entry['parity_ok'] else 'FAIL':>7} {_fmt(times.get('1'), '.3f') + ' ms':>10} "
                f"{_fmt(times.get('32'), '.3f') + ' ms':>10}"
            )
        if bench.get("cpu"):
            lines.append(f"  latency measured on {bench['cpu']} ({bench.get('provider')}, {bench.get('threads')} threads)")
        if export.get("int8_target"):
            lines.append(f"  int8 for {export['int8_target']} CPUs: {export.get('int8_checked')}")
    if summary.get("error"):
        lines.append(f"FAILED: {summary['error']}")
    if summary.get("deployable"):
        lines.append(f"deployable model: {run / summary['deployable']}")
        lines.append(f"  try it: coreg-edge predict {run / summary['deployable']} IMAGE...")
    if summary.get("report"):
        lines.append(f"report: {run / summary['report']} (open it in a browser)")
    return "\n".join(lines)
