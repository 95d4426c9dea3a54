"""Content digests of files: what identifies a checkpoint or a model config that a run, a shard or a
resumable call records. A path alone lets other weights behind the same name pass as the same (shards made
on two machines, a checkpoint replaced in place)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CACHE: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> digest, within one process


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks; cached for this process while size and mtime hold
    (a call that checks one checkpoint twice reads it once)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _CACHE[key] = digest.hexdigest()
    return _CACHE[key]


def content_id(spec: str | os.PathLike[str] | None) -> str | None:
    """"sha256:<hex>" when `spec` names a file, else None (a hub tag such as "openai", a model name)."""
    if spec is None or not Path(spec).expanduser().is_file():
        return None
    return f"sha256:{file_sha256(Path(spec).expanduser())}"
