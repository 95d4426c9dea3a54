"""Labels out: every annotated item's pseudo-label, for any other trainer (`coreg-edge labels`).

From a training run, the label is the run's network's prediction (its selected peer by default) on the
item's evaluation view, with the softmax probability as its confidence. From an annotation file alone, it is
the annotator's zero-shot argmax (confidence: its probability), or the single candidate of a set of one
(confidence 1) when the file has no zero-shot probabilities (the synthetic annotator); other items are
unlabelled. Written as CSV, JSON Lines or an ImageFolder of links (or copies); the user's files never move.
The output folder is built under a temporary name and renamed when complete; it may not lie inside the
image folder it labels (annotating that folder again would take its files for more items).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.annotation_file import Annotation
from coreg_edge.annotation_file import load as load_annotation
from coreg_edge.classes import class_folders
from coreg_edge.data import ImageSource, reopen
from coreg_edge.errors import UserError
from coreg_edge.locks import locks_output
from coreg_edge.outputs import check_new_folder, check_outside, new_folder
from coreg_edge.settings.fields import build
from coreg_edge.settings.labels import LabelsSettings

MANIFEST = {"csv": "labels.csv", "jsonl": "labels.jsonl", "imagefolder": "labels.csv"}
COLUMNS = ("item", "path", "label", "confidence")


@dataclass
class LabelTable:
    """One row per annotated item: its class index (-1 unlabelled) and confidence (nan when unknown)."""

    item_ids: list[str]
    labels: np.ndarray  # int64 (N,)
    confidence: np.ndarray  # float64 (N,)
    class_names: list[str]
    source: ImageSource
    origin: str  # what labelled them, for the summary
    indices: np.ndarray  # each item's index in `source` (every item is where the images are: checked)

    def rows(self) -> list[dict[str, Any]]:
        path_of = getattr(self.source, "path", None)
        out = []
        for i, item in enumerate(self.item_ids):
            label = int(self.labels[i])
            conf = float(self.confidence[i])
            out.append({
                "item": item,
                "path": str(path_of(int(self.indices[i]))) if path_of is not None else None,
                "label": self.class_names[label] if label >= 0 else None,
                "confidence": None if math.isnan(conf) else round(conf, 6),
            })  # fmt: skip
        return out


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


def labels_of_annotation(ann: Annotation, source: ImageSource) -> LabelTable:
    """Zero-shot argmax (with its probability), else the single candidate (confidence 1), else none."""
    if ann.zero_shot_probs.shape[1]:
        labels = ann.zero_shot_probs.argmax(1).astype(np.int64)
        confidence = ann.zero_shot_probs.max(1).astype(np.float64)
        origin = f"the annotator's zero-shot argmax ({ann.annotator.get('kind', 'clip')})"
    else:
        single = ann.candidates.sum(1) == 1
        labels = np.where(single, ann.candidates.argmax(1), -1).astype(np.int64)
        confidence = np.where(single, 1.0, np.nan)
        origin = "the annotation's single-candidate sets (no zero-shot probabilities in this file)"
    indices = source.indices_of(ann.item_ids)
    return LabelTable(list(ann.item_ids), labels, confidence, list(ann.class_names), source, origin, indices)


def check_out_outside(out: Path | None, source: ImageSource) -> None:
    """An output folder inside the labelled image folder would be read back as more items: refuse it."""
    if out is not None and source.kind == "folder":
        check_outside(out, source.root, "the image folder")


def labels_of_run(run: Path, settings: LabelsSettings, quiet: bool, out: Path | None = None) -> LabelTable:
    """The run's network (settings.peer) on every annotated item's evaluation view. The images are where
    training found them (the run's config), unless settings.data says where they are now; `out`, the
    folder to be written, is refused (before the network runs) when it lies inside them."""
    from coreg_edge.runs import FinishedRun  # lazy: labels of an annotation file need no torch (a device)

    trained = FinishedRun(run)
    config = trained.config
    ann = load_annotation(config["annotation"])
    if list(ann.class_names) != trained.class_names:
        raise UserError(
            f"{config['annotation']}: its classes ({', '.join(ann.class_names[:4])}, ...) are not the ones {run} "
            f"was trained on ({', '.join(config['class_names'][:4])}, ...); the annotation file changed since"
        )
    source, _ = reopen({**ann.data, **(config.get("data") or {})}, settings.data)  # recorded: pass --data
    check_out_outside(out, source)
    peer = trained.resolve_peer(settings.peer)
    indices = source.indices_of(ann.item_ids)
    table = trained.probabilities(
        source, indices, peer=peer, batch_size=settings.batch_size, device=settings.device, quiet=quiet
    )
    return LabelTable(
        list(ann.item_ids), table.argmax(1).astype(np.int64), table.max(1).astype(np.float64),
        trained.class_names, source, f"the run's {'ensemble' if peer == 'ensemble' else 'peer ' + peer}",
        indices,
    )  # fmt: skip


def _link_or_copy(src: Path, dst: Path, copy: bool) -> None:
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def _write_images(table: LabelTable, rows: list[dict[str, Any]], folder: Path, copy: bool) -> None:
    """One sub-folder per class of flat files named by flat_name(item): distinct items, distinct files."""
    folders = dict(zip(table.class_names, class_folders(table.class_names), strict=True))
    for name in folders.values():
        (folder / name).mkdir()
    for i, row in enumerate(rows):
        if row["label"] is not None:
            place_image(table, i, folder / folders[row["label"]], copy)


def flat_name(item: str) -> str:
    """An item id as one file name, distinct items never sharing one: '%' -> '%25', '/' -> '%2F' (and
    ':' -> '%3A'), as in URLs. Each character maps to a code word and no code word begins another (only the
    escapes start with '%'), so the map is injective; it is also readable back (urllib.parse.unquote).
    Flat, not nested, because readers such as fastai's parent_label and Hugging Face's imagefolder take the
    class from an image's own parent folder. The extension stays last; a name never starts with '.'."""
    return item.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


def place_image(table: LabelTable, row: int, folder: Path, copy: bool) -> str:
    """Put item `row`'s image into `folder` (a link to the original, or a copy; in-memory built-ins have no
    file, so their pixels are written as PNG) as flat_name(item id); returns the file name. A name that
    exists already is an error, never a silent overwrite."""
    item = table.item_ids[row]
    path_of = getattr(table.source, "path", None)
    name = flat_name(item) + ("" if path_of is not None else ".png")
    if os.path.lexists(folder / name):  # impossible with distinct item ids: a bug, said loudly
        raise RuntimeError(f"two items would share the file {folder.name}/{name}")
    if path_of is not None:
        _link_or_copy(Path(path_of(int(table.indices[row]))), folder / name, copy)
    else:
        table.source.load(int(table.indices[row])).save(folder / name)
    return name


@locks_output("out", "labels folder")
def export_labels(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: LabelsSettings | None = None,
    *,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Write the pseudo-labels of an annotation file or a run folder (`path`) into the folder `out`.
    Returns the summary (also printed by the CLI): counts per class, unlabelled items, where it went."""
    s = build(LabelsSettings, settings, options)
    path, out = Path(path), check_new_folder(out)  # before any work
    if s.copy and s.format != "imagefolder":
        warnings.warn(f"--copy is for --format imagefolder; a {s.format} file has no images to copy (ignored)",
                      stacklevel=2)  # fmt: skip
    if _is_run(path):
        table = labels_of_run(path, s, quiet, out)
    elif path.is_file():
        if s.peer != "selected":
            warnings.warn(f"--peer {s.peer} is for a run folder; an annotation file has no peers (ignored)",
                          stacklevel=2)  # fmt: skip
        ann = load_annotation(path)
        source, _ = reopen(ann.data, s.data)
        check_out_outside(out, source)
        table = labels_of_annotation(ann, source)
    else:
        raise UserError(f"{path}: neither an annotation file (.npz) nor a run folder (with config.json)")
    low = ~(table.confidence >= s.min_confidence) & (table.labels >= 0) & ~np.isnan(table.confidence)
    table.labels = np.where(low, -1, table.labels)
    rows = table.rows()
    with new_folder(out, "labels") as staging:
        if s.format == "imagefolder":
            _write_images(table, rows, staging, s.copy)
        (staging / MANIFEST[s.format]).write_text(_manifest(rows, s.format), encoding="utf-8")
    counts = {name: int((table.labels == c).sum()) for c, name in enumerate(table.class_names)}
    return {
        "out": str(out),
        "format": s.format,
        "labelled_by": table.origin,
        "items": len(rows),
        "labelled": int((table.labels >= 0).sum()),
        "unlabelled": int((table.labels < 0).sum()),
        "per_class": counts,
        "manifest": str(out / MANIFEST[s.format]),
    }


def _manifest(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    return buffer.getvalue()
