"""Parity: the exported files against PyTorch on real images, through the code a device runs.

Each batch is preprocessed ONCE by the runtime (`Classifier.preprocess`, the transform the file's own
metadata describes); PyTorch and every ONNX file (`Classifier.logits`) see that same array. Each format
(coreg_edge/formats.py) names the check set that judges it (CHECK_SETS, docs/FORMATS.md#parity):

    fp32 (fp32, ort)       max |logit diff| <= 1e-4, identical top-1 on every image
    fp16 (fp16)            mean cosine similarity >= 0.999, top-1 agreement >= 99%,
                           accuracy drop <= 0.5 point (when labels exist)
    int8 (int8, int8-ort)  mean cosine similarity >= 0.99, top-1 agreement >= 98%,
                           accuracy drop <= 1 point (when labels exist)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from coreg_edge.exporters.images import Subset, iter_batches
from coreg_edge.formats import ExportFormat, failed_check
from coreg_edge.runtime.classifier import Classifier
from coreg_edge.utils import progress


@dataclass(frozen=True)
class CheckSet:
    """The limits one kind of file must meet against PyTorch; a limit left None is not checked."""

    max_abs_logit_diff: float | None = None
    min_cosine: float | None = None
    min_top1_agreement: float = 1.0
    max_accuracy_drop: float | None = None

    def run(self, reference: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, Any]]:
        """{check: {value, threshold, op, ok}} in a fixed order; accuracy drop only where labels exist."""
        some = len(logits) > 0
        checks: dict[str, dict[str, Any]] = {}
        if self.max_abs_logit_diff is not None:
            diff = float(np.abs(reference - logits).max()) if some else None
            checks["max_abs_logit_diff"] = _check(diff, self.max_abs_logit_diff, "<=")
        if self.min_cosine is not None:
            mean = float(cosine(reference, logits).mean()) if some else None
            checks["mean_cosine"] = _check(mean, self.min_cosine, ">=")
        agreement = float((reference.argmax(1) == logits.argmax(1)).mean()) if some else None
        checks["top1_agreement"] = _check(agreement, self.min_top1_agreement, ">=")
        if self.max_accuracy_drop is not None:
            before, after = accuracy(reference, labels), accuracy(logits, labels)
            if before is not None and after is not None:
                checks["accuracy_drop"] = _check(before - after, self.max_accuracy_drop, "<=")
        return checks

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


#: The contract's limits (docs/FORMATS.md#parity), by the name a format's `checks` gives.
CHECK_SETS: dict[str, CheckSet] = {
    "fp32": CheckSet(max_abs_logit_diff=1e-4, min_top1_agreement=1.0),
    "fp16": CheckSet(min_cosine=0.999, min_top1_agreement=0.99, max_accuracy_drop=0.005),
    "int8": CheckSet(min_cosine=0.99, min_top1_agreement=0.98, max_accuracy_drop=0.01),
}


@dataclass(frozen=True)
class Thresholds:
    """Every check set, and how many images parity needs at least."""

    min_images: int = 256
    sets: Mapping[str, CheckSet] = field(default_factory=lambda: dict(CHECK_SETS))

    def of(self, checks: str) -> CheckSet:
        return self.sets[checks]

    def with_limits(self, checks: str, **limits: float) -> Thresholds:
        """A copy with one check set's limits changed (tests make a check impossible this way)."""
        return replace(self, sets={**self.sets, checks: replace(self.sets[checks], **limits)})

    def to_dict(self) -> dict[str, Any]:
        return {"min_images": self.min_images, **{name: limits.to_dict() for name, limits in self.sets.items()}}


@dataclass
class Logits:
    """Everything parity measured: PyTorch's logits, each ONNX file's, labels and the evaluation mask."""

    reference: np.ndarray
    onnx: dict[str, np.ndarray]
    labels: np.ndarray
    is_eval: np.ndarray
    skipped: list[str]
    inputs: np.ndarray | None = None  # the preprocessed batches, on disk (kept only when asked)

    @property
    def check_labels(self) -> np.ndarray:
        """Labels the accuracy-drop check uses: the evaluation split's when it has any, else all known."""
        eval_labels = np.where(self.is_eval, self.labels, -1)
        return eval_labels if (eval_labels >= 0).any() else self.labels


def collect_logits(
    module: Any,
    classifiers: Mapping[str, Classifier],
    subsets: Sequence[Subset],
    *,
    batch_size: int = 32,
    quiet: bool = False,
    keep_inputs: str | os.PathLike[str] | None = None,
) -> Logits:
    """Run PyTorch (`module`) and every classifier on the same runtime-preprocessed batches.

    `keep_inputs`: a .npy path that receives the preprocessed batches, so that later files (int8
    attempts, an emulator) see exactly the same tensors without decoding the images again."""
    first = next(iter(classifiers.values()))
    reference: list[np.ndarray] = []
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in classifiers}
    labels: list[np.ndarray] = []
    is_eval: list[np.ndarray] = []
    skipped: list[str] = []
    total = sum(len(part) for part in subsets)
    stored: np.ndarray | None = None
    filled = 0
    with progress(None, desc="parity", total=total, quiet=quiet, unit="img") as bar, torch.no_grad():
        for images, batch_labels, batch_eval in iter_batches(subsets, batch_size, skipped):
            arrays = first.preprocess(images)
            if keep_inputs is not None:
                if stored is None:
                    shape = (total, *arrays.shape[1:])
                    stored = np.lib.format.open_memmap(keep_inputs, mode="w+", dtype=np.float32, shape=shape)
                stored[filled : filled + len(arrays)] = arrays
                filled += len(arrays)
            reference.append(module(torch.from_numpy(arrays)).numpy())
            for name, classifier in classifiers.items():
                outputs[name].append(classifier.logits(arrays))
            labels.append(batch_labels)
            is_eval.append(batch_eval)
            bar.update(len(images))
    width = len(first.class_names)
    return Logits(
        reference=np.concatenate(reference) if reference else np.zeros((0, width), np.float32),
        onnx={
            name: np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
            for name, parts in outputs.items()
        },
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        is_eval=np.concatenate(is_eval) if is_eval else np.zeros(0, bool),
        skipped=skipped,
        inputs=None if stored is None else stored[:filled],
    )


def _check(value: float | None, threshold: float, op: str) -> dict[str, Any]:
    ok = (
        value is not None
        and math.isfinite(value)
        and (value <= threshold if op == "<=" else value >= threshold)
    )
    return {
        "value": None if value is None else float(value),
        "threshold": threshold,
        "op": op,
        "ok": bool(ok),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Top-1 accuracy over the labelled rows (None when no row has a label)."""
    known = labels >= 0
    if not known.any():
        return None
    return float((logits[known].argmax(axis=1) == labels[known]).mean())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def evaluate(
    measured: Logits, files: Mapping[str, ExportFormat], limits: Thresholds
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any] | None]:
    """Checks per file ({file: {check: {value, threshold, op, ok}}}) and test accuracy per format.

    `files` maps each file name to its format row, whose `checks` names the check set that judges it (an
    fp16 file is never judged by the int8 limits). The accuracy-drop check uses the evaluation split's
    labels when it has them, else the labelled held-out items; test accuracy is the evaluation split's only.
    """
    eval_labels = np.where(measured.is_eval, measured.labels, -1)
    check_labels = measured.check_labels
    checks = {
        name: limits.of(row.checks).run(measured.reference, measured.onnx[name], check_labels)
        for name, row in files.items()
    }
    test_accuracy = None
    if (eval_labels >= 0).any():
        test_accuracy = {"pytorch": accuracy(measured.reference, eval_labels)}
        test_accuracy.update({row.name: accuracy(measured.onnx[name], eval_labels) for name, row in files.items()})
        test_accuracy["images"] = int((eval_labels >= 0).sum())
    return checks, test_accuracy


def first_failure(report: Mapping[str, Any]) -> str | None:
    """A one-line reason for the first failed check (None when all passed)."""
    for note in report.get("problems", []):
        return note
    for name, checks in report.get("checks", {}).items():
        failed = failed_check(checks)
        if failed is not None:
            return f"parity failed: {name} {failed}"
    return None


def format_table(report: Mapping[str, Any]) -> str:
    """parity.json as a plain-text table (printed by `coreg-edge export`)."""
    images = report.get("images", {})
    lines = [
        f"parity on {images.get('count', 0)} images ({', '.join(images.get('sources', [])) or 'none'}), "
        f"batch {images.get('batch_size')}, vs PyTorch peer {report.get('peer')}",
        f"{'file':<18} {'check':<20} {'value':>12} {'limit':>12}  result",
    ]
    for name, checks in report.get("checks", {}).items():
        for check, result in checks.items():
            value = "n/a" if result["value"] is None else f"{result['value']:.6g}"
            limit = f"{result['op']} {result['threshold']:g}"
            lines.append(
                f"{name:<18} {check:<20} {value:>12} {limit:>12}  {'ok' if result['ok'] else 'FAIL'}"
            )
    accuracy_row = report.get("test_accuracy")
    if accuracy_row:
        parts = [f"{k} {v:.4f}" for k, v in accuracy_row.items() if k != "images" and v is not None]
        lines.append(f"test accuracy ({accuracy_row['images']} images): {', '.join(parts)}")
    sizes = {
        name: info for name, info in (report.get("files") or {}).items() if info.get("bytes") is not None
    }
    if sizes:
        lines.append(
            "sizes: " + ", ".join(f"{name} {info['bytes'] / 1e6:.2f} MB" for name, info in sizes.items())
        )
    for info in (report.get("files") or {}).values():
        if info.get("error"):
            lines.append(f"not made: {info['error']}")
        if info.get("kept"):
            lines.append(f"kept: {info['kept']}")
    if report.get("int8"):
        lines.append(summary_line(report["int8"]))
    for note in report.get("problems", []):
        lines.append(f"problem: {note}")
    lines.append("parity: OK" if report.get("ok") else "parity: FAILED")
    return "\n".join(lines)


def summary_line(int8: dict[str, Any]) -> str:
    """parity.json's int8 part in one line: target, shipped settings, recovery, how it was checked."""
    target = (int8.get("target") or {}).get("name", "?")
    if int8.get("error"):
        return f"int8 target {target}: not made ({int8['error']})"
    attempts = int8.get("attempts")
    if attempts is None:  # --check-only: nothing was quantized
        return f"int8 target {target}: {int8.get('note')}"
    shipped = int8.get("shipped")
    if shipped is None:
        return f"int8 target {target}: none of {len(attempts)} attempts passed parity; {int8.get('note')}"
    text = f"int8 target {target}: {attempts[shipped]['settings_text']}"
    if shipped and attempts[0].get("ok"):  # --qat force: the fine-tuned file shipped though the first passed
        text += f" (attempt {shipped + 1}; {attempts[0]['settings_text']} passed too)"
    elif shipped:
        first = attempts[0]
        text += f" (recovered at attempt {shipped + 1}; {first['settings_text']} failed: {first['reason']}"
        if not int8.get("faithful"):
            text += "; on this CPU's kernels, not the target's, where the target's own settings may pass"
        text += ")"
    speed = int8.get("speed") or {}
    if speed.get("ratio") is not None:  # exporters/speed.py: timed where this CPU runs the target's kernels
        text += f"; int8 at {speed['ratio']:.2f}x fp32's latency (batch {speed['batch_size']}, this CPU)"
    return f"{text}; {int8.get('note')}"
