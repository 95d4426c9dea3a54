"""Fingerprints of stage inputs and settings, and the stage records in RUN/stages.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coreg_edge.data.builtin import parse_builtin
from coreg_edge.digests import file_sha256
from coreg_edge.errors import UserError
from coreg_edge.pipeline.layout import STATE_FILE, STATE_FORMAT_VERSION
from coreg_edge.recipe import Recipe
from coreg_edge.utils import write_json

_BIG_INPUT = 64 * 1024 * 1024  # user files above this are fingerprinted by size + mtime, not content


def _digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(spec: str | os.PathLike[str] | None) -> str | None:
    """What identifies a user input: a built-in dataset by name, a file by content (large: size + mtime),
    a folder by its listing (relative path, size, mtime of every file)."""
    if spec is None:
        return None

    path = Path(spec).expanduser()
    if not path.exists():
        try:
            if parse_builtin(str(spec)) is not None:
                return f"builtin:{str(spec).lower()}"
        except UserError:
            pass
        return f"name:{spec}"  # a set name (templates "default"), a hub tag ("openai"), or a missing path
    if path.is_file():
        stat = path.stat()
        if stat.st_size > _BIG_INPUT:
            return f"stat:{stat.st_size}:{stat.st_mtime_ns}"
        return f"sha256:{file_sha256(path)}"
    listing = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            with contextlib.suppress(OSError):
                stat = full.stat()
                listing.append((str(full.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return f"folder:{_digest_json(listing)}"


def _without(settings: Mapping[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """A stage's settings without its execution keys (settings/fields.py execution_keys): changing where or
    how a stage runs re-runs nothing."""
    return {k: v for k, v in settings.items() if k not in keys}


class StageState:
    """RUN/stages.json: read once, rewritten atomically whenever a stage starts, finishes or fails."""

    def __init__(self, run: Path, recipe: Recipe):
        self.path = run / STATE_FILE
        self.data: dict[str, Any] = {"format_version": STATE_FORMAT_VERSION, "stages": {}}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                loaded = {}  # unreadable records: every stage re-runs, which is always safe
            if isinstance(loaded, dict) and loaded.get("format_version") == STATE_FORMAT_VERSION:
                self.data = loaded
        self.data["recipe"] = recipe.name
        self._digests: dict[tuple[str, int, int], str] = {}

    def record(self, stage: str) -> dict[str, Any]:
        return self.data["stages"].get(stage) or {}

    def set(self, stage: str, record: dict[str, Any]) -> None:
        self.data["stages"][stage] = record
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)

    def digest(self, path: Path) -> str | None:
        """sha256 of an output file (cached by size + mtime within this process); None when missing."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_sha256(path)
        return self._digests[key]

    def outputs_intact(self, run: Path, record: Mapping[str, Any]) -> bool:
        outputs = record.get("outputs") or {}
        return bool(outputs) and all(self.digest(run / rel) == digest for rel, digest in outputs.items())

    def output_digests(self, run: Path, rels: Sequence[str]) -> dict[str, str]:
        digests = {}
        for rel in rels:
            digest = self.digest(run / rel)
            if digest is None:
                raise UserError(f"{run / rel}: the stage finished but did not write this file")
            digests[rel] = digest
        return digests


def fingerprint(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    """sha256 of a stage's resolved settings and its inputs' digests."""
    return _digest_json({"settings": settings, "inputs": inputs})
