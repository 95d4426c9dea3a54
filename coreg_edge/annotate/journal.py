"""Annotation at scale, part 2: a killed annotation resumes (`annotate --resume`).

While a streaming annotator votes, the votes of every finished run of batches go to `OUT.partial/` as a
chunk file (written atomically): the rows, their votes and probabilities, and the unreadable ones.
`--resume` reads them back, checks they were made by the same call (settings, data, voters, shard), and
votes only the rest, starting on a batch boundary, so the resumed file equals the uninterrupted one. A
finished annotation removes the folder; a new call without --resume starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.errors import UserError
from coreg_edge.utils import atomic_path, read_json_object

# how _changes names an identity key that is no option
CHANGE_NAMES = {"items": "the item count", "item_files": "the images (renamed, replaced or edited since)",
                "weights": "the weights' content (another file behind the same path)"}
CHUNK_ITEMS = 4096  # items per chunk file, at least (a whole number of batches)
CHUNK_SECONDS = 60.0  # or this long since the last chunk, whichever comes first
IDENTITY_FILE = "identity.json"


def partial_folder(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


class Journal:
    """The chunks of one annotation call; `identity` says which call (what must match to resume)."""

    def __init__(self, out: str | Path, identity: dict[str, Any], *, resume: bool):
        self.folder = partial_folder(out)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        self.resumed = 0
        self.resume = resume
        self.buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]] = []
        self.buffered = 0
        self.last = time.monotonic()
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.folder} is a file; it is where annotate keeps its finished votes: move it away")
        if resume and not self.folder.is_dir():
            raise UserError(f"--resume: no interrupted annotation to continue ({self.folder} does not exist)")
        if resume:
            recorded = read_json_object(self.folder / IDENTITY_FILE) or None
            if recorded != self.identity:
                raise UserError(f"--resume: {self.folder} was made by another call ({_changes(recorded, self.identity)}); "
                                "give the same options, or drop --resume to start over")  # fmt: skip
        # A new call starts over, but an earlier call's votes go only when this one has votes of its own to
        # keep (first flush): a call that fails first (a typo in an option) loses nothing.
        self.fresh = not resume
        self.chunks = _last_chunk(self.folder) if resume else 0
        self.voters: list[str] = []

    def restore(self, votes: np.ndarray, probs: np.ndarray, skips: Any, base: int, voters: list[str]) -> np.ndarray:
        """Fill the arrays (position = DATA row - `base`) from the chunks on disk; the DATA rows they cover
        (skipped ones too). The chunks must come from these very voters (a template file edited since
        would otherwise mix two annotators' votes)."""
        done: list[np.ndarray] = []
        if self.fresh:
            return np.zeros(0, np.int64)
        for path in sorted(self.folder.glob("chunk-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as chunk:
                    if json.loads(str(chunk["voters"])) != voters:
                        raise UserError(f"--resume: {path} holds other voters' votes (a template or examples "
                                        "file changed since); drop --resume to start over")  # fmt: skip
                    rows, good = chunk["rows"], chunk["good"]
                    votes[good - base] = chunk["votes"]
                    probs[good - base] = chunk["probs"]
                    entries = json.loads(str(chunk["skipped"]))
            except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile, EOFError) as exc:
                raise UserError(f"--resume: {path} is unreadable ({type(exc).__name__}); drop --resume to start over") from exc
            if entries and skips.strict:
                raise UserError(f"--resume --strict: the interrupted call skipped {len(entries)} unreadable image(s) "
                                f"({entries[0]['item']}, ...); drop --strict, or drop --resume to start over")  # fmt: skip
            for entry in entries:
                skips.items.append({"item": entry["item"], "reason": entry["reason"]})
                skips.indices.add(int(entry["row"]))
            done.append(rows)
        rows = np.concatenate(done) if done else np.zeros(0, np.int64)
        self.resumed = len(rows)
        return rows

    def add(self, rows: np.ndarray, good: np.ndarray, votes: np.ndarray, probs: np.ndarray,
            skipped: list[dict[str, Any]], voters: list[str]) -> None:  # fmt: skip
        """One finished batch: every row it covered, the readable ones' votes and probabilities."""
        self.voters = voters
        self.buffer.append((rows, good, votes, probs, skipped))
        self.buffered += len(rows)
        if self.buffered >= CHUNK_ITEMS or time.monotonic() - self.last >= CHUNK_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered batches as one chunk file (atomically): kept even if the process dies next."""
        if not self.buffer:
            return
        if self.fresh:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            with atomic_path(self.folder / IDENTITY_FILE) as tmp:
                Path(tmp).write_text(json.dumps(self.identity, indent=2, sort_keys=True), encoding="utf-8")
            self.fresh = False
        rows, good, votes, probs, skipped = zip(*self.buffer, strict=True)
        path = self.folder / f"chunk-{self.chunks + 1:06d}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, rows=np.concatenate(rows), good=np.concatenate(good), votes=np.concatenate(votes),
                     probs=np.concatenate(probs), skipped=np.asarray(json.dumps([s for part in skipped for s in part])),
                     voters=np.asarray(json.dumps(self.voters)))  # fmt: skip
        self.chunks += 1  # only once the file is in place: an interrupted flush leaves no gap to overwrite
        self.buffer, self.buffered, self.last = [], 0, time.monotonic()

    def finish(self) -> None:
        """The annotation file is written: the chunks are no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)


def items_fingerprint(source: Any) -> str:
    """sha256 of every item's id and, for an image file, its size and modification time: what --resume must
    find unchanged. A count alone let a renamed image (same count) take another image's votes."""
    digest = hashlib.sha256()
    path_of = getattr(source, "path", None)
    for index, item in enumerate(source.item_ids):
        digest.update(item.encode("utf-8", "surrogateescape") + b"\0")
        if path_of is not None:
            try:
                stat = os.stat(path_of(index))
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            except OSError:
                digest.update(b"missing")
        digest.update(b"\n")
    return digest.hexdigest()


def _last_chunk(folder: Path) -> int:
    """The highest chunk number on disk (0: none); the next chunk is one more, never one that exists."""
    numbers = [int(p.stem.split("-")[1]) for p in folder.glob("chunk-*.npz") if p.stem.split("-")[1].isdigit()]
    return max(numbers, default=0)


def _changes(recorded: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """Which options differ, by name (settings one level down): "changed: mode, templates"."""
    if recorded is None:
        return "its identity.json is unreadable"
    old_settings, new_settings = recorded.get("settings") or {}, now.get("settings") or {}
    names = sorted(k for k in {*old_settings, *new_settings} if old_settings.get(k) != new_settings.get(k))
    names += sorted(CHANGE_NAMES.get(k, k) for k in {*recorded, *now} if k != "settings" and recorded.get(k) != now.get(k))
    return f"changed: {', '.join(names)}" if names else "changed: nothing readable"

