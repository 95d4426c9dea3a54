"""Voters: the one interface every voting annotator's labels come through (docs/ALGORITHM.md#annotation).

A voting annotator is an `Embedder` (an item image -> a feature vector) and groups of `Voters` over that
embedding (a `Panel`). A group defines the classes in the embedding once (`class_features()`: the prompt
texts' features under each template, the mean feature of each class's example images, the simulator's
weak classifier) and then votes each item's top-1 class, one column per voter (`vote()`). The annotation
file's `votes` columns are the voters of all groups, named in its `voters` list, so CLIP's text templates,
example images and the simulator's templates are peers and combine in one candidate set. (The synthetic
protocol has no voters: its sets come from ground truth, annotate/synthetic.py.)

`vote_items` drives a panel: it reads every item once, skips unreadable ones, hands batches of features to
every group (or all items at once when the embedder says `whole_set`, for voters fitted on the items
themselves), and builds the candidate sets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from coreg_edge.annotate.job import AnnotateJob, AnnotatorResult
from coreg_edge.annotate.modes import candidate_sets, union_top1
from coreg_edge.errors import UserError
from coreg_edge.runtime.image import ImageDecodeError
from coreg_edge.utils import progress

LOGIT_SCALE = 100.0  # the spec's softmax(100 * cos), independent of a checkpoint's learned scale


@dataclass
class Ballot:
    """One group's answer for a batch of items."""

    votes: np.ndarray  # int16 (B, V): each voter's top-1 class
    probs: np.ndarray | None = None  # float32 (B, C): class probabilities averaged over the voters; None: none


class Voters(ABC):
    """A group of voters over one embedding (text templates, example means, simulated templates)."""

    names: list[str]  # one per votes column, as the annotation file lists them
    # True: the annotator's candidate mode (union-top1, topk, ratio) reads this group's votes and scores;
    # False: every vote of this group joins the set as it is (the examples' voter, whatever the mode)
    in_mode: bool = True

    def fit(self, features: Any, rows: np.ndarray) -> None:
        """Learn from the items themselves (`rows`: their indices in DATA); most voters learn nothing.
        Called only when the embedder has `whole_set`, before class_features()."""
        return None

    @abstractmethod
    def class_features(self) -> Any:
        """What defines each class under each voter, computed once before the items are voted on."""

    @abstractmethod
    def vote(self, features: Any) -> Ballot:
        """(B, D) item features -> each voter's top-1 class (and the group's class probabilities)."""


class Embedder(ABC):
    """Items (and example images) -> features, in batches: `preprocess` per image (DataLoader workers may
    run it), `collate` a list of preprocessed images, `encode` the batch."""

    whole_set: bool = False  # True: the voters see every item's features in one call (fit, then vote)
    device: str = "cpu"

    @abstractmethod
    def preprocess(self, image: Image.Image) -> Any: ...

    def collate(self, items: list[Any]) -> Any:
        return np.stack(items)

    @abstractmethod
    def encode(self, batch: Any) -> Any:
        """Collated preprocessed images -> (B, D) features (a numpy array or a torch tensor)."""

    def embed(self, images: list[Image.Image]) -> Any:
        return self.encode(self.collate([self.preprocess(image) for image in images]))


@dataclass
class Panel:
    """A voting annotator for one job: its embedder, its voter groups (in votes-column order), the candidate
    mode, and the annotator block's keys that describe it."""

    embedder: Embedder
    groups: list[Voters]
    mode: str = "union-top1"
    k: int = 5
    ratio: float = 0.5
    identity: dict[str, Any] = field(default_factory=dict)


def as_numpy(features: Any) -> np.ndarray:
    """Features as a float64 numpy array (from a torch tensor on any device, or an array)."""
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    return np.asarray(features, dtype=np.float64)


def vote_items(job: AnnotateJob, panel: Panel) -> AnnotatorResult:
    """Every readable item embedded once and voted on by every group; unreadable items get placeholder rows
    (dropped later). Probabilities are the first group's that has them; the candidate set is the mode over
    the in-mode groups, plus every vote of the others."""
    # arrays for the job's rows only (a shard's, not all of DATA's): position = DATA row - base
    base, c = job.first_row, job.num_classes
    m = len(job.item_rows)
    columns = [len(group.names) for group in panel.groups]
    starts = np.cumsum([0, *columns])
    voters = [name for group in panel.groups for name in group.names]
    votes = np.zeros((m, int(starts[-1])), dtype=np.int16)
    probs = np.full((m, c), 1.0 / c, dtype=np.float32)  # unreadable items' rows stay uniform (dropped later)

    def record(rows: np.ndarray, ballots: list[Ballot]) -> None:
        for g, ballot in enumerate(ballots):
            votes[rows - base, starts[g] : starts[g + 1]] = ballot.votes
        first = next((ballot.probs for ballot in ballots if ballot.probs is not None), None)
        if first is not None:
            probs[rows - base] = first

    if panel.embedder.whole_set:
        if job.rows is not None or job.journal is not None:  # the registry's `streaming` rows only get these
            raise UserError("--shard and --resume need a streaming annotator (clip); this one fits its voters on "
                            "the whole set at once")  # fmt: skip
        batches = [(good, features) for _, good, features in _embedded(job, panel.embedder, job.item_rows)
                   if features is not None]  # fmt: skip
        if not batches:
            return _empty(job, panel)
        rows = np.concatenate([r for r, _ in batches])
        features = np.concatenate([f for _, f in batches])
        for group in panel.groups:
            group.fit(features, rows)
        record(rows, [group.vote(features) for group in panel.groups])
    else:
        for group in panel.groups:
            group.class_features()  # once, before the image loop
        todo, journal = job.item_rows, job.journal
        if journal is not None:
            todo = todo[~np.isin(todo, journal.restore(votes, probs, job.skips, base, voters))]
        try:
            for batch, good, features in _embedded(job, panel.embedder, todo):
                if features is not None:
                    record(good, [group.vote(features) for group in panel.groups])
                if journal is not None:
                    bad = [{"row": int(i), "item": job.source.item_ids[i], "reason": why}
                           for i, why in job.skips.reasons(batch)]  # fmt: skip
                    journal.add(batch, good, votes[good - base], probs[good - base], bad, voters)
        finally:
            if journal is not None:
                journal.flush()  # every finished batch is kept, even when interrupted
    return AnnotatorResult(
        candidates=_candidates(panel, votes, probs, starts, c),
        votes=votes,
        probs=probs,
        voters=voters,
        identity=panel.identity,
        first_row=base,
    )


def _candidates(panel: Panel, votes: np.ndarray, probs: np.ndarray, starts: np.ndarray, c: int) -> np.ndarray:
    moded = [g for g, group in enumerate(panel.groups) if group.in_mode and starts[g + 1] > starts[g]]
    if moded:
        columns = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in moded])
        sets = candidate_sets(panel.mode, votes=votes[:, columns], probs=probs, k=panel.k, ratio_threshold=panel.ratio)
    else:
        sets = np.zeros((len(votes), c), dtype=bool)
    for g, group in enumerate(panel.groups):
        if not group.in_mode:
            sets |= union_top1(votes[:, starts[g] : starts[g + 1]], c)
    return sets


def _empty(job: AnnotateJob, panel: Panel) -> AnnotatorResult:
    n, c = len(job.source), job.num_classes
    return AnnotatorResult(
        candidates=np.zeros((n, c), dtype=bool),
        votes=np.zeros((n, sum(len(g.names) for g in panel.groups)), dtype=np.int16),
        probs=np.full((n, c), 1.0 / c, dtype=np.float32),
        voters=[name for group in panel.groups for name in group.names],
        identity=panel.identity,
    )


def _embedded(
    job: AnnotateJob, embedder: Embedder, rows: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
    """(the batch's item rows, its readable rows, their features or None) batch by batch, in the order of
    `rows`; unreadable items go to job.skips."""
    from torch.utils.data import DataLoader, Dataset  # lazy: annotate imports without torch (train extra)

    source, preprocess = job.source, embedder.preprocess

    class _Images(Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, position: int):
            i = int(rows[position])
            try:
                return i, preprocess(source.load(i)), ""
            except ImageDecodeError as exc:
                return i, None, str(exc)

    def collate(batch):
        good = [(i, x) for i, x, _ in batch if x is not None]
        bad = [(i, why) for i, x, why in batch if x is None]
        every = [i for i, _, _ in batch]
        return every, [i for i, _ in good], embedder.collate([x for _, x in good]) if good else None, bad

    s = job.settings
    loader = DataLoader(
        _Images(), batch_size=s.batch_size, num_workers=s.workers, collate_fn=collate,
        pin_memory=embedder.device.startswith("cuda"),
    )  # fmt: skip
    bar = progress(loader, desc="annotating", total=len(loader), quiet=job.quiet)
    for every, indices, images, bad in bar:
        for i, why in bad:
            job.skips.add(i, source.item_ids[i], why)
        features = embedder.encode(images) if images is not None else None
        yield np.asarray(every, dtype=np.int64), np.asarray(indices, dtype=np.int64), features
