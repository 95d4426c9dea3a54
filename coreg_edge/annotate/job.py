"""What an annotator is given (AnnotateJob) and what it gives back (AnnotatorResult)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from coreg_edge.data import ImageSource
from coreg_edge.errors import UserError
from coreg_edge.settings.annotate import AnnotateSettings


class Skips:
    """Collects unreadable items: a warning each, or an error with --strict."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.items: list[dict[str, str]] = []
        self.indices: set[int] = set()
        self.why: dict[int, str] = {}

    def add(self, index: int, item: str, reason: str) -> None:
        if self.strict:
            raise UserError(f"unreadable image: {reason} (drop --strict to skip such images)")
        warnings.warn(f"skipping unreadable image: {reason}", stacklevel=2)
        self.items.append({"item": item, "reason": reason})
        self.indices.add(index)
        self.why[index] = reason

    def reasons(self, rows: Any) -> list[tuple[int, str]]:
        """(row, reason) of the unreadable items among `rows`."""
        return [(int(i), self.why[int(i)]) for i in rows if int(i) in self.why]


@dataclass
class AnnotateJob:
    """What an annotator gets: the items, the classes and the settings (annotate/registry.py)."""

    data: str
    source: ImageSource
    class_names: list[str]
    prompt_names: list[str | list[str]]
    labels: np.ndarray  # ground truth, -1 unknown
    settings: AnnotateSettings
    skips: Skips
    quiet: bool
    rows: np.ndarray | None = None  # the items to annotate (a shard); None: all of them
    journal: Any = None  # annotate/journal.py Journal: chunks of finished votes, for --resume

    @property
    def item_rows(self) -> np.ndarray:
        """The consecutive DATA rows this job annotates."""
        return np.arange(len(self.source), dtype=np.int64) if self.rows is None else self.rows

    @property
    def first_row(self) -> int:
        return int(self.item_rows[0]) if len(self.item_rows) else 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def folder_root(self) -> str | None:
        """DATA's folder when it is one (example images must lie outside it)."""
        return self.source.root if self.source.kind == "folder" else None


@dataclass
class AnnotatorResult:
    """One annotator's arrays for the job's items, DATA's rows first_row .. first_row + M - 1 (a shard's
    rows are consecutive; rows of unreadable items are dropped later)."""

    candidates: np.ndarray  # bool (M, C)
    votes: np.ndarray  # int16 (M, V): one column per voter
    probs: np.ndarray  # float32 (M, C), or (M, 0) when the annotator has no scores
    voters: list[str]  # one name per votes column
    identity: dict[str, Any]  # the annotator block's keys that apply to this annotator
    first_row: int = 0  # the DATA row of the arrays' first row
