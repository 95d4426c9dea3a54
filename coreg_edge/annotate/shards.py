"""Annotation at scale, part 1: shards (`annotate --shard K/N`, `annotate --merge SHARD... --out ann.npz`).

A shard is the K-th of N consecutive blocks of DATA's items, each block a whole number of batches, so every
batch a shard sees is one the one-shot annotation sees too: merged shards equal the one-shot file exactly
(candidates, votes, probabilities, item ids). A shard file is an ordinary annotation file whose meta has
`shard` {index, count, start, end, total, batch_size, reject}; merge refuses missing, duplicated or mismatched
shards. The data block must match too: shards made on several machines must see DATA under the same path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.annotation_file import Annotation, AnnotationFormatError, check_output_name, load
from coreg_edge.errors import UserError
from coreg_edge.locks import exclusive
from coreg_edge.settings.annotate import SHARD_PATTERN


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """"K/N" -> (K, N), 1 <= K <= N; "auto": this process's rank under torchrun (RANK + 1 of WORLD_SIZE)."""
    if str(text).strip() == "auto":
        env = os.environ if environ is None else environ
        missing = [name for name in ("RANK", "WORLD_SIZE") if name not in env]
        if missing:
            raise UserError(f"--shard auto: {' and '.join(missing)} not set (launch with torchrun, or give K/N)")
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        except ValueError:
            raise UserError(f"--shard auto: RANK={env['RANK']!r} and WORLD_SIZE={env['WORLD_SIZE']!r} must be whole numbers") from None
        if world < 1 or not 0 <= rank < world:
            raise UserError(f"--shard auto: RANK must be within [0, WORLD_SIZE) (got RANK={rank}, WORLD_SIZE={world})")
        return rank + 1, world
    match = SHARD_PATTERN.match(str(text))
    if not match:
        raise UserError(f"--shard {text}: give K/N, e.g. 2/4 for the second of four parts")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise UserError(f"--shard {text}: K must be between 1 and N (got {index}/{count})")
    return index, count


def shard_rows(total: int, index: int, count: int, batch_size: int) -> np.ndarray:
    """The items of shard `index` of `count`: consecutive, a whole number of batches (except the last)."""
    batches = math.ceil(total / batch_size)
    if count > batches:
        raise UserError(
            f"--shard {index}/{count}: DATA has {total} items, {batches} batches of {batch_size}; "
            f"use at most {batches} shards (or a smaller --batch-size)"
        )
    first, last = (index - 1) * batches // count, index * batches // count  # batches spread evenly
    return np.arange(first * batch_size, min(total, last * batch_size), dtype=np.int64)


def shard_path(out: str | os.PathLike[str], index: int, count: int) -> str:
    """OUT with `{shard}` replaced by K-of-N, so every rank under torchrun writes its own file."""
    return str(out).replace("{shard}", f"{index}-of-{count}")


def shard_block(
    index: int, count: int, rows: np.ndarray, total: int, batch_size: int, reject: float | None
) -> dict[str, Any]:
    return {"index": index, "count": count, "start": int(rows[0]), "end": int(rows[-1]) + 1, "total": total,
            "batch_size": batch_size, "reject": reject}  # fmt: skip


def _same(first: Annotation, other: Annotation) -> str | None:
    """What makes `other` a shard of another annotation than `first` (None: the same one)."""
    if other.class_names != first.class_names:
        return "other classes"
    if other.voters != first.voters:
        return "other voters (templates or examples)"
    if other.annotator != first.annotator:
        changed = sorted(k for k in {*first.annotator, *other.annotator} if first.annotator.get(k) != other.annotator.get(k))
        return f"another annotator ({', '.join(changed)})"
    if other.data != first.data:
        return "other data"
    if other.extra.get("prompt_names") != first.extra.get("prompt_names"):
        return "other prompt wording (--wording or --classes)"
    for key, what in (("batch_size", "another --batch-size"), ("reject", "another --reject")):
        if other.extra["shard"].get(key) != first.extra["shard"].get(key):
            return what
    return None


def merge_shards(paths: Sequence[str | os.PathLike[str]]) -> Annotation:
    """The one annotation of all N shards, in item order; one clear error for anything missing or mixed."""
    if not paths:
        raise UserError("--merge: give the shard files (annotate --shard K/N writes them)")
    shards: dict[int, tuple[str, Annotation]] = {}
    count = total = None
    for path in paths:
        try:
            ann = load(path)
        except AnnotationFormatError as exc:
            raise UserError(f"--merge: {exc}") from exc
        block = ann.extra.get("shard")
        if not isinstance(block, dict):
            raise UserError(f"--merge: {path} is not a shard file (annotate --shard K/N writes them)")
        try:
            index, _, _ = int(block["index"]), int(block["count"]), int(block["total"])
            int(block["start"]), int(block["end"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"--merge: {path}: its shard block is damaged (needs index, count, total, start, end)") from None
        if not 1 <= index <= int(block["count"]):
            raise UserError(f"--merge: {path} says it is shard {index} of {block['count']}: not a valid shard")
        if count is None:
            count, total, first_path, first = int(block["count"]), int(block["total"]), str(path), ann
        elif int(block["count"]) != count or int(block["total"]) != total:
            raise UserError(f"--merge: {path} is shard {index}/{block['count']} of {block['total']} items, "
                            f"but {first_path} is of {count} shards of {total} items")  # fmt: skip
        if index in shards:
            raise UserError(f"--merge: shard {index}/{count} given twice ({shards[index][0]}, {path})")
        why = _same(first, ann)
        if why is not None:
            raise UserError(f"--merge: {path} has {why} than {first_path}: shards of one annotation only")
        shards[index] = (str(path), ann)
    missing = [k for k in range(1, count + 1) if k not in shards]
    if missing:
        raise UserError(f"--merge: missing shard {', '.join(f'{k}/{count}' for k in missing)}")
    ordered = [shards[k][1] for k in range(1, count + 1)]
    starts = [int(a.extra["shard"]["start"]) for a in ordered]
    ends = [int(a.extra["shard"]["end"]) for a in ordered]
    if starts[0] != 0 or ends[-1] != total or any(e != s for e, s in zip(ends[:-1], starts[1:], strict=True)):
        raise UserError("--merge: the shards' item ranges do not tile DATA (made with other --batch-size values?)")
    extra = {k: v for k, v in first.extra.items() if k != "shard"}
    return Annotation(
        candidates=np.concatenate([a.candidates for a in ordered]),
        labels=np.concatenate([a.labels for a in ordered]),
        item_ids=[item for a in ordered for item in a.item_ids],
        class_names=list(first.class_names),
        votes=np.concatenate([a.votes for a in ordered]),
        zero_shot_probs=np.concatenate([a.zero_shot_probs for a in ordered]),
        voters=list(first.voters),
        annotator=dict(first.annotator),
        data=dict(first.data),
        skipped=[item for a in ordered for item in a.skipped],
        rejected=[item for a in ordered for item in a.rejected],
        extra={**extra, "merged_from": [shards[k][0] for k in range(1, count + 1)]},
    )


def merge_into(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Annotation:
    """Merge the shard files into the new annotation file `out` (refused when it exists or is a shard)."""
    if any(Path(shard).resolve() == Path(out).resolve() for shard in paths):
        raise UserError(f"--out {out}: is one of the shards to merge; write the merged file elsewhere")
    check_output_name(out)
    with exclusive(out, "annotation file"):
        annotation = merge_shards(paths)
        annotation.save(out)
    return annotation
