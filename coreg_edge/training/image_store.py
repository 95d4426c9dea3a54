"""Training images behind one batch-fetch interface: `store.fetch(rows) -> uint8 (B, C, H, W) on the device`.

Two backends, chosen by size (`--cache auto|memory|disk`):

- `MemoryStore`: every image decoded once into one uint8 tensor on the training device (small data: the
  fastest, and what training always did);
- `DiskStore`: the same uint8 rows in a file on disk (`~/.cache/coreg-edge/images`, or
  `$COREG_EDGE_CACHE/images`), written once per (data, items, preprocessing) and reused by later runs and
  by resume; a batch is read with one `pread` per row, so memory stays bounded whatever the data size (a
  memory map would count every page it touched as the process's memory). On CUDA the batch goes through
  pinned memory with a non-blocking copy. The sha256 of each block of about 16 MiB of rows is computed while
  the file is written and kept beside it (`.json`); a reuse checks them all first (`cache_problem`, by
  `--workers` threads), so a file of the right size holding other bytes is decoded again, never trained on.

Both give the same bytes, so a run trains identically with either (tests/training/test_image_store.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from coreg_edge.data import ImageSource
from coreg_edge.errors import UserError
from coreg_edge.logs import info
from coreg_edge.runtime.image import ImageDecodeError
from coreg_edge.runtime.preprocess import PreprocessConfig, resize_and_crop
from coreg_edge.utils import progress, read_json_object

#: `--cache auto` keeps the images in memory up to this many bytes (uint8 at the input size), else on disk.
MEMORY_LIMIT = 2 * 1024**3
TRAINING = "training images"  # the `what` of the annotated items (their decode errors say: re-run annotate)
CACHE_FORMAT_VERSION = 1
#: The disk cache's digests cover blocks of whole rows of about this many bytes: checked by several threads,
#: and a mismatch names the rows it is in.
DIGEST_BLOCK_BYTES = 16 * 1024**2
READ_BYTES = 8 * 1024**2  # what one pread of the check reads (memory: this x --workers)


class ImageStore(Protocol):
    shape: tuple[int, int, int]  # (C, H, W)
    kind: str  # "memory" or "disk"

    def __len__(self) -> int: ...

    def fetch(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 (len(rows), C, H, W) on the training device, in the order of `rows`."""
        ...


@dataclass
class MemoryStore:
    images: torch.Tensor  # uint8 (N, C, H, W) on the training device
    kind: str = "memory"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def fetch(self, rows: torch.Tensor) -> torch.Tensor:
        return self.images[rows.to(self.images.device)]


class DiskStore:
    """uint8 rows in a file, read batch by batch (see the module docstring)."""

    kind = "disk"

    def __init__(self, path: Path, count: int, shape: tuple[int, int, int], device: torch.device):
        self.path, self.count, self.shape, self.device = path, count, tuple(shape), device
        self.row_bytes = int(np.prod(self.shape))
        expected = self.row_bytes * count
        if path.stat().st_size != expected:
            raise UserError(f"{path}: the image cache is {path.stat().st_size} bytes, not {expected}; delete it")
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.count

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            os.close(self._fd)

    def fetch(self, rows: torch.Tensor) -> torch.Tensor:
        rows_np = rows.detach().cpu().numpy()
        pin = self.device.type == "cuda"
        out = torch.empty((len(rows_np), *self.shape), dtype=torch.uint8, pin_memory=pin)
        flat = out.numpy().reshape(len(rows_np), self.row_bytes)
        for i, row in enumerate(rows_np):
            flat[i] = np.frombuffer(os.pread(self._fd, self.row_bytes, int(row) * self.row_bytes), np.uint8)
        return out.to(self.device, non_blocking=pin)


def cache_dir() -> Path:
    root = os.environ.get("COREG_EDGE_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "coreg-edge"
    return base / "images"


def cache_key(source: ImageSource, indices: np.ndarray, config: PreprocessConfig) -> str:
    """What identifies the cached bytes: the source, the items in order (with each file's size and mtime,
    so an image replaced in place is decoded again) and the preprocessing."""
    digest = hashlib.sha256()
    header = {"version": CACHE_FORMAT_VERSION, "source": source.describe(), "preprocess": config.to_metadata()}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    path_of: Callable[[int], Path] | None = getattr(source, "path", None)
    for index in indices:
        digest.update(source.item_ids[int(index)].encode())
        if path_of is not None:
            with contextlib.suppress(OSError):
                stat = path_of(int(index)).stat()
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def _decoded(
    source: ImageSource, indices: np.ndarray, config: PreprocessConfig, workers: int, what: str = "images"
) -> Iterator[np.ndarray]:
    """uint8 (C, H, W) arrays of the items in order, decoded by `workers` threads (PIL releases the GIL)."""
    hint = "it was readable when annotated; re-run annotate" if what == TRAINING else f"in {what}: fix or remove it"

    def decode(index: int) -> np.ndarray:
        try:
            return np.ascontiguousarray(np.asarray(resize_and_crop(source.load(int(index)), config)).transpose(2, 0, 1))
        except ImageDecodeError as exc:
            raise UserError(f"{exc} ({hint})") from exc

    with contextlib.ExitStack() as stack:
        if workers > 0:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
            yield from pool.map(decode, indices)
        else:
            yield from map(decode, indices)


def decode_to_memory(
    source: ImageSource, indices: np.ndarray, config: PreprocessConfig, *, quiet: bool = False,
    what: str = "images", workers: int = 0,
) -> torch.Tensor:  # fmt: skip
    """uint8 (N, C, H, W) of the given source indices, decoded and resized once (the runtime's resize)."""
    out = torch.empty((len(indices), *config.shape), dtype=torch.uint8)
    arrays = _decoded(source, indices, config, workers, what)
    for row, array in enumerate(progress(arrays, desc=f"loading {what}", quiet=quiet, total=len(indices))):
        out[row] = torch.from_numpy(array)
    return out


def decode_to_disk(
    source: ImageSource, indices: np.ndarray, config: PreprocessConfig, *, quiet: bool = False,
    what: str = "images", workers: int = 0, folder: Path | None = None,
) -> Path:  # fmt: skip
    """The cache file of these items: reused when it holds the bytes written (cache_problem), else written
    (again), atomically, with the digests of its blocks beside it."""
    folder = folder or cache_dir()
    path = folder / f"{cache_key(source, indices, config)}.u8"
    row_bytes = int(np.prod(config.shape))
    if path.exists():
        problem = cache_problem(path, row_bytes, len(indices), workers=workers, quiet=quiet)
        if problem is None:
            return path
        warnings.warn(f"image cache {path}: {problem}; decoding the images again", stacklevel=2)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the image cache {folder} ({exc}); set COREG_EDGE_CACHE elsewhere") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta_path = path.with_suffix(".json")
    meta_tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    per_block = block_rows(row_bytes)
    digests: list[str] = []
    try:
        with open(tmp, "wb") as fh:
            block, in_block = hashlib.sha256(), 0
            arrays = _decoded(source, indices, config, workers, what)
            for array in progress(arrays, desc=f"caching {what} on disk", quiet=quiet, total=len(indices)):
                data = array.tobytes()
                fh.write(data)
                block.update(data)
                in_block += 1
                if in_block == per_block:
                    digests.append(block.hexdigest())
                    block, in_block = hashlib.sha256(), 0
            if in_block:
                digests.append(block.hexdigest())
        meta = {"items": len(indices), "shape": list(config.shape), "what": what,
                "root": source.describe().get("root"), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "bytes": row_bytes * len(indices), "block_rows": per_block, "block_sha256": digests}  # fmt: skip
        meta_tmp.write_text(json.dumps(meta) + "\n", encoding="utf-8")
        os.replace(meta_tmp, meta_path)  # the digests first: a file in place always has its own beside it
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write the image cache {path} ({exc}); free space or set COREG_EDGE_CACHE") from exc
    finally:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
    return path


def block_rows(row_bytes: int) -> int:
    """Rows per digest block: whole rows, about DIGEST_BLOCK_BYTES."""
    return max(1, DIGEST_BLOCK_BYTES // row_bytes)


def cache_problem(path: Path, row_bytes: int, count: int, *, workers: int = 0, quiet: bool = True) -> str | None:
    """None when the cache file holds exactly the bytes written (its size, then every block's sha256 against
    the digests recorded beside it, read once by `workers` threads); else what is wrong with it. A size
    alone let a file of other bytes (a disk error, a copy gone wrong, another tool) be trained on."""
    expected = row_bytes * count
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size != expected:
        return f"it is {size} bytes, not {expected}"
    meta = read_json_object(path.with_suffix(".json"))
    digests, per_block = meta.get("block_sha256"), meta.get("block_rows")
    blocks = -(-count // per_block) if isinstance(per_block, int) and per_block > 0 else -1
    if not isinstance(digests, list) or len(digests) != blocks or meta.get("bytes") != expected:
        return "no digest of its bytes is recorded beside it (an older coreg-edge wrote it)"
    block_bytes = per_block * row_bytes

    def matches(block: int) -> bool:
        digest, offset = hashlib.sha256(), block * block_bytes
        end = min(offset + block_bytes, expected)
        while offset < end:
            data = os.pread(fd, min(READ_BYTES, end - offset), offset)
            if not data:
                return False
            digest.update(data)  # hashlib lets go of the GIL: the threads read and hash in parallel
            offset += len(data)
        return digest.hexdigest() == digests[block]

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            checked = progress(pool.map(matches, range(blocks)), desc="checking the image cache", quiet=quiet,
                               total=blocks)  # fmt: skip
            bad = next((block for block, ok in enumerate(checked) if not ok), None)
            pool.shutdown(cancel_futures=True)  # the first bad block decides: the others are not read
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    finally:
        os.close(fd)
    if bad is None:
        return None
    first, last = bad * per_block, min((bad + 1) * per_block, count) - 1
    return f"rows {first}-{last} are not the bytes written there (sha256 of block {bad} differs)"


def choose_cache(cache: str, count: int, config: PreprocessConfig) -> tuple[str, str]:
    """(memory | disk, why): `auto` keeps up to MEMORY_LIMIT bytes in memory."""
    size = count * int(np.prod(config.shape))
    if cache != "auto":
        return cache, f"--cache {cache}"
    if size <= MEMORY_LIMIT:
        return "memory", f"{_gib(size)}, within the {_gib(MEMORY_LIMIT)} kept in memory"
    return "disk", f"{_gib(size)}, above the {_gib(MEMORY_LIMIT)} kept in memory"


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB" if size >= 1024**3 else f"{size / 1024**2:.1f} MiB"


def build_store(
    source: ImageSource, indices: np.ndarray, config: PreprocessConfig, device: torch.device, *, cache: str = "auto",
    quiet: bool = False, what: str = "images", workers: int = 0,
) -> ImageStore:  # fmt: skip
    """The images of `indices` behind fetch(), in memory or on disk (choose_cache)."""
    kind, why = choose_cache(cache, len(indices), config)
    if kind == "memory":
        images = decode_to_memory(source, indices, config, quiet=quiet, what=what, workers=workers)
        if not quiet:
            info(f"{what}: {len(indices)} in memory ({why})")
        return MemoryStore(images.to(device))
    path = decode_to_disk(source, indices, config, quiet=quiet, what=what, workers=workers)
    if not quiet:
        info(f"{what}: {len(indices)} on disk, read batch by batch from {path} ({why})")
    return DiskStore(path, len(indices), config.shape, device)


def iterate_rows(rows: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(rows), batch_size):
        yield rows[start : start + batch_size]


def all_rows(store: ImageStore) -> torch.Tensor:
    return torch.arange(len(store), dtype=torch.long)


def describe(store: ImageStore) -> dict[str, Any]:
    info: dict[str, Any] = {"cache": store.kind, "items": len(store), "shape": list(store.shape)}
    if isinstance(store, DiskStore):
        info["file"] = str(store.path)
    return info
