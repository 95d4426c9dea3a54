"""The annotation file: one self-describing `.npz` (docs/FORMATS.md#annotation-file-npz), saved atomically,
validated on load.

Arrays: candidates bool (N, C), votes int16 (N, V) (one column per voter), zero_shot_probs float32 (N, C)
or (N, 0), labels int64 (N,), item_ids str (N,), meta str (JSON). Version 2 names the votes columns
`voters` (prompt templates, example images, simulated templates: annotate/voters.py); version 1 called them
`templates` and is still read. Read with allow_pickle=False: a downloaded
annotation file can never execute code.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.errors import UserError
from coreg_edge.utils import atomic_path

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ARRAY_KEYS = ("candidates", "votes", "zero_shot_probs", "labels", "item_ids", "meta")
META_KEYS = ("format_version", "class_names", "voters", "annotator", "data", "skipped", "stats")
# what version 1 called a key that version 2 renamed
V1_NAMES = {"voters": "templates"}


class AnnotationFormatError(UserError):
    """A file that is not a valid coreg-edge annotation file; the message names what is wrong."""


@dataclass
class Annotation:
    """Candidate sets for N items over C classes, with everything needed to train on them."""

    candidates: np.ndarray
    labels: np.ndarray
    item_ids: list[str]
    class_names: list[str]
    votes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int16))
    zero_shot_probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    voters: list[str] = field(default_factory=list)  # one name per votes column
    annotator: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    # "none of these" (annotate --reject): items left out, each {item, score} (the best zero-shot probability)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more meta keys, kept as they are
    read_version: int = FORMAT_VERSION  # the format_version of the file it was read from (saved as the current)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.votes.size == 0 and self.votes.shape[0] != n:
            self.votes = np.zeros((n, 0), dtype=np.int16)
        if self.zero_shot_probs.size == 0 and self.zero_shot_probs.shape[0] != n:
            self.zero_shot_probs = np.zeros((n, 0), dtype=np.float32)

    @property
    def num_items(self) -> int:
        return int(self.candidates.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.candidates.shape[1])

    @property
    def has_labels(self) -> bool:
        return bool(self.num_items) and bool((self.labels >= 0).all())

    def stats(self) -> dict[str, Any]:
        """mean set size, coverage (true label in the set) and zero-shot accuracy; None where unknown."""
        known = self.labels >= 0
        coverage = None
        zero_shot = None
        if known.any():
            rows = np.flatnonzero(known)
            coverage = float(self.candidates[rows, self.labels[rows]].mean())
            if self.zero_shot_probs.shape[1]:
                zero_shot = float((self.zero_shot_probs[rows].argmax(1) == self.labels[rows]).mean())
        return {
            "num_items": self.num_items,
            "num_classes": self.num_classes,
            "num_voters": int(self.votes.shape[1]),
            "mean_candidates": float(self.candidates.sum(1).mean()) if self.num_items else 0.0,
            "coverage": coverage,
            "zero_shot_accuracy": zero_shot,
            "labelled_items": int(known.sum()),
            "skipped_items": len(self.skipped),
            "rejected_items": len(self.rejected),
        }

    def meta(self) -> dict[str, Any]:
        return {
            **self.extra,
            "format_version": FORMAT_VERSION,
            "class_names": list(self.class_names),
            "voters": list(self.voters),
            "annotator": self.annotator,
            "data": self.data,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "stats": self.stats(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Validate, then write atomically (temporary name, renamed when complete)."""
        validate(self, source=str(path))
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                candidates=self.candidates.astype(bool),
                votes=self.votes.astype(np.int16),
                zero_shot_probs=self.zero_shot_probs.astype(np.float32),
                labels=self.labels.astype(np.int64),
                item_ids=np.asarray(self.item_ids, dtype=str),
                meta=np.asarray(json.dumps(self.meta())),
            )
        return path


def check_output_name(out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """The one check annotate and annotate --merge make of --out, before any work: a name ending in .npz, and
    no earlier file under it (an hours-long annotation is never replaced by a typo; `overwrite=True` is
    for the pipeline re-annotating its own folder)."""
    path = Path(out)
    if path.suffix != ".npz":
        raise UserError(f"--out {out}: an annotation file ends in .npz (did you mean {out}.npz?)")
    if path.is_dir():
        raise UserError(f"--out {out}: is a folder; give the annotation file's name (e.g. {path / 'ann.npz'})")
    if path.exists() and not overwrite:
        raise UserError(f"--out {out}: exists; choose a new name, or delete it first (nothing was overwritten)")


def validate(ann: Annotation, source: str = "annotation") -> None:
    """Raise AnnotationFormatError naming the first inconsistency."""

    def fail(msg: str) -> None:
        raise AnnotationFormatError(f"{source}: {msg}")

    n, c = ann.candidates.shape if ann.candidates.ndim == 2 else (-1, -1)
    if ann.candidates.ndim != 2 or ann.candidates.dtype != bool:
        fail(f"'candidates' must be a bool (N, C) matrix (got {ann.candidates.dtype} {ann.candidates.shape})")
    if c < 2:
        fail(f"'candidates' has {c} class(es); at least 2 are needed")
    if len(ann.class_names) != c:
        fail(f"meta.class_names has {len(ann.class_names)} names but 'candidates' has {c} columns")
    if len(ann.item_ids) != n:
        fail(f"'item_ids' has {len(ann.item_ids)} entries but 'candidates' has {n} rows")
    if len(set(ann.item_ids)) != n:
        fail("'item_ids' are not unique")
    if n and not ann.candidates.any(axis=1).all():
        fail(f"{int((~ann.candidates.any(axis=1)).sum())} item(s) have an empty candidate set")
    if ann.labels.shape != (n,) or not np.issubdtype(ann.labels.dtype, np.integer):
        fail(f"'labels' must be int64 (N,) = ({n},) (got {ann.labels.dtype} {ann.labels.shape})")
    if n and (ann.labels.min() < -1 or ann.labels.max() >= c):
        fail(f"'labels' must be -1 (unknown) or a class index below {c}")
    if ann.votes.ndim != 2 or ann.votes.shape[0] != n:
        fail(f"'votes' must be (N, T) with N = {n} (got {ann.votes.shape})")
    if ann.votes.size and (ann.votes.min() < 0 or ann.votes.max() >= c):
        fail(f"'votes' must be class indices below {c}")
    if ann.votes.shape[1] != len(ann.voters):
        fail(f"'votes' has {ann.votes.shape[1]} voter columns but meta.voters lists {len(ann.voters)}")
    if (
        ann.zero_shot_probs.ndim != 2
        or ann.zero_shot_probs.shape[0] != n
        or ann.zero_shot_probs.shape[1] not in (0, c)
    ):
        fail(f"'zero_shot_probs' must be (N, C) or (N, 0) (got {ann.zero_shot_probs.shape})")
    if ann.zero_shot_probs.size and not np.isfinite(ann.zero_shot_probs).all():
        fail("'zero_shot_probs' holds NaN or infinite values")


def load(path: str | os.PathLike[str]) -> Annotation:
    """Read and validate an annotation file; every problem is one AnnotationFormatError line."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationFormatError(f"{path}: no such annotation file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in ARRAY_KEYS if key not in npz.files]
            if missing:
                raise AnnotationFormatError(
                    f"{path}: not a coreg-edge annotation file (missing {', '.join(missing)})"
                )
            arrays = {key: _plain_array(npz, key, path) for key in ARRAY_KEYS}
    except AnnotationFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        # numpy's own text for a non-archive suggests allow_pickle=True, which must never be followed here.
        reason = "not an .npz archive" if "pickle" in str(exc) else str(exc)
        raise AnnotationFormatError(f"{path}: not a readable .npz annotation file ({reason})") from exc
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise AnnotationFormatError(f"{path}: 'meta' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise AnnotationFormatError(f"{path}: 'meta' must be a JSON object")
    version = meta.get("format_version")
    if version is None:
        raise AnnotationFormatError(f"{path}: meta lacks format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise AnnotationFormatError(
            f"{path}: format_version must be a whole number (got {version!r}, a {type(version).__name__})"
        )
    if version not in READABLE_VERSIONS:
        raise AnnotationFormatError(
            f"{path}: format_version {version} is not supported (this coreg-edge reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))})"
        )
    names = {key: V1_NAMES.get(key, key) if version == 1 else key for key in META_KEYS}
    missing_meta = [names[key] for key in META_KEYS if names[key] not in meta]
    if missing_meta:
        raise AnnotationFormatError(f"{path}: meta lacks {', '.join(missing_meta)}")
    if arrays["item_ids"].dtype.kind != "U":
        raise AnnotationFormatError(f"{path}: 'item_ids' must be strings")
    known = set(names.values())
    ann = Annotation(
        candidates=arrays["candidates"],
        labels=arrays["labels"].astype(np.int64)
        if np.issubdtype(arrays["labels"].dtype, np.integer)
        else arrays["labels"],
        item_ids=[str(x) for x in arrays["item_ids"].tolist()],
        class_names=list(meta["class_names"]),
        votes=arrays["votes"],
        zero_shot_probs=arrays["zero_shot_probs"],
        voters=list(meta[names["voters"]]),
        annotator=dict(meta["annotator"]),
        data=dict(meta["data"]),
        skipped=list(meta["skipped"]),
        rejected=list(meta.get("rejected") or []),  # files written before --reject have none
        extra={k: v for k, v in meta.items() if k not in known | {"rejected"}},
        read_version=version,
    )
    validate(ann, source=str(path))
    return ann


def _plain_array(npz: Any, key: str, path: Path) -> np.ndarray:
    """One array of the archive; an array of pickled Python objects is refused by name (never unpickled)."""
    try:
        return npz[key]
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise
        raise AnnotationFormatError(
            f"{path}: its '{key}' array holds pickled Python objects; an annotation file holds plain arrays "
            "only, and coreg-edge never unpickles a file"
        ) from None


def describe(ann: Annotation) -> dict[str, Any]:
    """The `info --json` summary of an annotation file."""
    return {
        "kind": "annotation",
        **ann.stats(),
        "class_names": ann.class_names,
        "annotator": ann.annotator,
        "data": ann.data,
        "format_version": ann.read_version,
    }
