"""`coreg-edge bench DIR`: every format's file in an export folder, timed interleaved, one table.

ultralytics' benchmark convention: one row per format with its file, size, the accuracy parity measured
(DIR/parity.json, when there) and its latency per batch size. The models run interleaved in each iteration
(bench.time_models), so the ratios between rows are fair on a noisy machine. Device install only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreg_edge.cpu import cpu_name
from coreg_edge.errors import UserError
from coreg_edge.formats import FORMATS, file_passed
from coreg_edge.runtime.bench import ModelBench, _megabytes, bench_settings, open_for_bench, time_models
from coreg_edge.runtime.metadata import ModelError
from coreg_edge.settings.bench import BenchSettings
from coreg_edge.utils import one_line, read_json_object


@dataclass(frozen=True)
class FormatRow:
    format: str
    bench: ModelBench
    test_accuracy: float | None  # parity.json's, measured on the evaluation split
    parity_ok: bool | None  # None: no parity.json entry

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "test_accuracy": self.test_accuracy, "parity_ok": self.parity_ok,
                **self.bench.to_dict()}  # fmt: skip


@dataclass(frozen=True)
class FormatsBench:
    """What `coreg-edge bench DIR --json` prints, and a pipeline run's bench.json."""

    folder: str
    rows: tuple[FormatRow, ...]
    warmup: int
    iters: int
    # files that could not be opened, each {"format", "file", "error"}: the others were timed all the same
    skipped: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        first = self.rows[0].bench
        return {
            "folder": self.folder,
            "cpu": first.cpu,
            "cpu_flags": list(first.cpu_flags),
            "int8_kernels": first.int8_kernels,
            "provider": first.provider,
            "threads": first.threads,
            "warmup": self.warmup,
            "iters": self.iters,
            "formats": [row.to_dict() for row in self.rows],
            "skipped": list(self.skipped),
        }


def format_files(folder: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(format, path) of every format's file in an export folder, in the formats table's order."""
    folder = Path(folder)
    found = [(row.name, folder / row.file_name) for row in FORMATS if (folder / row.file_name).is_file()]
    if not found:
        names = ", ".join(row.file_name for row in FORMATS)
        raise UserError(f"{folder}: no exported model in this folder (looked for {names})")
    return found


def _own_accuracy(metadata: Any) -> float | None:
    """Without parity.json: the test accuracy the file's own metadata carries (export measured it)."""
    value = metadata.get("test_accuracy") if isinstance(metadata, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def bench_formats(
    folder: str | os.PathLike[str],
    settings: BenchSettings | None = None,
    *,
    providers: str | Sequence[str] | None = None,
    progress: bool = False,
    caller: str = "python",
    **options: Any,
) -> FormatsBench:
    """Time every format's file in FOLDER, interleaved, at each batch size. A file that cannot be opened
    (corrupt, truncated, wrong metadata) is left out with one warning line naming it and why, and listed
    under `skipped`: one bad file does not hide the others' numbers. None opening is an error."""
    s = bench_settings(settings, options, caller)
    files, models, skipped = [], [], []
    found = format_files(folder)
    for name, path in found:
        try:  # idle threads spin only for a lone model (time_models' rule)
            models.append(open_for_bench(path, s, providers=providers, caller=caller, spinning=len(found) == 1))
        except ModelError as exc:
            skipped.append({"format": name, "file": path.name, "error": one_line(exc)})
            warnings.warn(f"bench skips {path}: {one_line(exc)}", UserWarning, stacklevel=2)
            continue
        files.append((name, path))
    if not files:
        raise UserError(f"{folder}: no model in this folder could be opened ({skipped[0]['error']})")
    opened, benches = time_models([path for _, path in files], s, providers=providers, progress=progress,
                                  caller=caller, opened=models)  # fmt: skip
    parity = read_json_object(Path(folder) / "parity.json")
    accuracy = parity.get("test_accuracy") if isinstance(parity.get("test_accuracy"), dict) else {}
    files_block = parity.get("files") if isinstance(parity.get("files"), dict) else {}
    if not isinstance(parity.get("checks"), dict):
        parity = {}
    rows = []
    for (name, path), bench, model in zip(files, benches, opened, strict=True):
        entry = files_block.get(path.name) if isinstance(files_block.get(path.name), dict) else {}
        if entry.get("published", True):
            measured = accuracy.get(name) if parity else _own_accuracy(model.metadata)
            rows.append(FormatRow(name, bench, measured, file_passed(parity, path.name)))
        else:  # an earlier export's file, kept: its own earlier checks, when that report described it
            earlier = entry.get("earlier_checks")
            ok = all(c.get("ok") for c in earlier.values()) if earlier else None
            rows.append(FormatRow(name, bench, None, ok))
    return FormatsBench(str(folder), tuple(rows), s.warmup, s.iters, tuple(skipped))


def format_formats(report: FormatsBench) -> str:
    """The one table: format, file, size, accuracy, parity, p50 per batch size, images/s at the largest."""
    first = report.rows[0].bench
    sizes = [r.batch_size for r in first.results]
    lines = [
        f"cpu       {first.cpu or cpu_name()} | int8 kernels: {first.int8_kernels or '?'}",
        f"provider  {first.provider} | threads {first.threads} | {report.warmup} warm-up + {report.iters} timed "
        "iterations, all formats interleaved",
    ]
    for row in report.rows:
        if row.bench.target_note:
            lines.append(f"note      {row.bench.target_note}")
    header = f"{'format':<9} {'file':<16} {'size':>9} {'test acc':>9} {'parity':>7}"
    header += "".join(f" {'p50 b' + str(b):>10}" for b in sizes) + f" {'img/s b' + str(sizes[-1]):>11}"
    lines.append(header)
    for row in report.rows:
        acc = "n/a" if row.test_accuracy is None else f"{row.test_accuracy:.4f}"
        parity = "n/a" if row.parity_ok is None else ("ok" if row.parity_ok else "FAIL")
        line = f"{row.format:<9} {Path(row.bench.model).name:<16} {_megabytes(row.bench.bytes):>9} {acc:>9} {parity:>7}"
        line += "".join(f" {r.p50_ms:>7.3f} ms" for r in row.bench.results)
        line += f" {row.bench.results[-1].images_per_s:>11.1f}"
        lines.append(line)
    return "\n".join(lines)
