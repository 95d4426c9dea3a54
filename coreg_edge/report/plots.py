"""The report's pictures, each a pure function of plain data -> PNG bytes (matplotlib's object API, no
pyplot state, the Agg canvas: no display needed).

matplotlib is the report extra: only page.build_page imports this module, and it turns a missing matplotlib
into one MissingExtraError line.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PEER_COLOURS = {"a": "#1f77b4", "b": "#ff7f0e", "ensemble": "#2ca02c"}
DPI = 100


def _figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False)


def _png(figure: Any) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _loss_value(loss: Any) -> float | None:
    """An epoch's loss for one peer: its `total` when it has parts, else its only value."""
    if isinstance(loss, (int, float)):
        return float(loss)
    if not isinstance(loss, Mapping):
        return None
    if isinstance(loss.get("total"), (int, float)):
        return float(loss["total"])
    numbers = [v for k, v in loss.items() if isinstance(v, (int, float)) and k not in ("p_share", "pseudo_label_accuracy")]
    return float(numbers[0]) if len(numbers) == 1 else None


def _series(metrics: Sequence[Mapping[str, Any]], pick: Any) -> tuple[list[int], list[float]]:
    epochs, values = [], []
    for row in metrics:
        value = pick(row)
        if isinstance(value, (int, float)) and np.isfinite(value):
            epochs.append(int(row.get("epoch", len(epochs))) + 1)
            values.append(float(value))
    return epochs, values


def training_curves(metrics: Sequence[Mapping[str, Any]], peers: Sequence[str]) -> bytes:
    """Loss, held-out hit rate, test accuracy (when there are labels) and the share of items in P, per epoch
    and peer; the warm-up epochs shaded."""
    figure, axes = _figure(10, 6.4, 2, 2)
    panels = [
        ("loss (warm-up, then the method's total)", lambda peer: lambda r: _loss_value((r.get("loss") or {}).get(peer))),
        ("held-out hit rate (prediction inside the candidate set)",
         lambda peer: lambda r: ((r.get("holdout") or {}).get(peer) or {}).get("hit_rate")),
        ("test accuracy (evaluation split)", lambda peer: lambda r: (r.get("test_accuracy") or {}).get(peer)),
        ("share of items in P (clean set)", lambda peer: lambda r: ((r.get("loss") or {}).get(peer) or {}).get("p_share")
         if isinstance((r.get("loss") or {}).get(peer), Mapping) else None),
    ]  # fmt: skip
    warm = [int(r.get("epoch", 0)) + 1 for r in metrics if r.get("phase") == "warmup"]
    for ax, (title, make) in zip(axes.flat, panels, strict=True):
        drawn = False
        for peer in (*peers, "ensemble"):
            epochs, values = _series(metrics, make(peer))
            if epochs:
                ax.plot(epochs, values, label=f"peer {peer}" if peer != "ensemble" else "ensemble",
                        color=PEER_COLOURS.get(peer), linewidth=1.6, linestyle="--" if peer == "ensemble" else "-")  # fmt: skip
                drawn = True
        if warm:
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.92", zorder=0, label="warm-up")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not recorded by this run", ha="center", va="center", transform=ax.transAxes, color="0.4")
    return _png(figure)


def candidate_sets(
    sizes: np.ndarray, covered: np.ndarray | None, num_classes: int, labelled_sizes: np.ndarray | None = None
) -> bytes:
    """How many candidates each item has; for the labelled items (`covered`, their set sizes
    `labelled_sizes`), how often the true class is in the set, by size."""
    figure, axes = _figure(10, 3.4, 1, 2)
    counts = np.bincount(sizes, minlength=num_classes + 1)[1:]
    left, right = axes[0]
    left.bar(np.arange(1, num_classes + 1), counts, color="#4c72b0")
    left.set_title(f"candidate-set size (mean {sizes.mean():.2f} of {num_classes} classes)", fontsize=10)
    left.set_xlabel("classes in the set")
    left.set_ylabel("items")
    left.grid(axis="y", alpha=0.3)
    if covered is None:
        right.text(0.5, 0.5, "no ground truth: coverage unknown", ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    else:
        labelled = sizes if labelled_sizes is None else labelled_sizes
        present = [k for k in range(1, num_classes + 1) if (labelled == k).any()]
        share = [covered[labelled == k].mean() for k in present]
        right.bar(present, share, color="#55a868")
        right.set_ylim(0, 1)
        right.set_title(f"true class in the set (coverage {covered.mean():.1%}), by set size", fontsize=10)
        right.set_xlabel("classes in the set")
        right.grid(axis="y", alpha=0.3)
    return _png(figure)


def confusion(predicted: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> bytes:
    """Row-normalised confusion matrix and per-class accuracy on the evaluation split."""
    c = len(class_names)
    matrix = np.zeros((c, c), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    rows = matrix.sum(1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    side = min(9.0, 3.0 + 0.35 * c)
    figure, axes = _figure(side + 4.5, side, 1, 2)
    left, right = axes[0]
    image = left.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=left, shrink=0.8, label="share of the true class's items")
    shown = c <= 30
    if shown:
        left.set_xticks(range(c), class_names, rotation=90 if c > 10 else 0, fontsize=8)
        left.set_yticks(range(c), class_names, fontsize=8)
        if c <= 15:
            for i in range(c):
                for j in range(c):
                    if matrix[i, j]:
                        left.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                                  color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    left.set_xlabel("predicted")
    left.set_ylabel("true")
    accuracy = (predicted == labels).mean()
    left.set_title(f"confusion on {len(labels)} evaluation images (accuracy {accuracy:.1%})", fontsize=10)
    per_class = np.diag(matrix) / np.maximum(rows[:, 0], 1)
    right.barh(range(c), per_class, color="#4c72b0")
    right.set_xlim(0, 1)
    right.invert_yaxis()
    if shown:
        right.set_yticks(range(c), class_names, fontsize=8)
    right.set_title("per-class accuracy", fontsize=10)
    right.grid(axis="x", alpha=0.3)
    return _png(figure)


def latency(rows: Sequence[Mapping[str, Any]], cpu: str) -> bytes:
    """p50 latency per image against batch size, one line per format (bench.json)."""
    figure, axes = _figure(7.5, 3.8)
    ax = axes[0][0]
    for row in rows:
        results = row.get("results") or []
        sizes = [r["batch_size"] for r in results]
        per_image = [r["p50_ms"] / r["batch_size"] for r in results]
        ax.plot(sizes, per_image, marker="o", label=row.get("format"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 ms per image")
    ax.set_title(f"latency on {cpu or 'this CPU'}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(figure)
