"""What a report is made from: the files a training run, an export folder or a pipeline run holds."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.formats import FILE_NAMES, REJECTED_SUFFIX
from coreg_edge.utils import read_json_object


@dataclass(frozen=True)
class ReportSources:
    """Paths of everything a report can show; None where the input has no such part."""

    path: Path  # what the user named
    kind: str  # "pipeline run", "training run" or "export folder"
    run: Path | None  # the training run folder (config.json, metrics.jsonl, selection.json)
    export: Path | None  # the export folder (parity.json and the model files)
    annotation: Path | None  # the annotation file the run trained on
    bench: Path | None  # bench.json: every format's latency per batch size
    summary: Path | None  # a pipeline run's summary.json

    def read(self, name: str) -> dict[str, Any] | None:
        """One of the JSON files (summary, bench), or the export's parity.json / the run's selection.json."""
        path = {"summary": self.summary, "bench": self.bench,
                "parity": self.export / "parity.json" if self.export else None,
                "selection": self.run / "selection.json" if self.run else None,
                "config": self.run / "config.json" if self.run else None}[name]  # fmt: skip
        if path is None or not path.is_file():
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None


def _annotation_of(run: Path) -> Path | None:
    named = read_json_object(run / "config.json").get("annotation")
    if not named:
        return None
    path = Path(named)
    if not path.is_absolute() and not path.exists():
        path = run / path
    return path if path.is_file() else None


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file()


def is_export(folder: Path) -> bool:
    """An export folder: its parity.json, or only its model files (parity.json lost or never copied)."""
    return (folder / "parity.json").is_file() or any(
        (folder / name).is_file() or (folder / f"{name}{REJECTED_SUFFIX}").is_file() for name in FILE_NAMES
    )


def find_sources(path: str | os.PathLike[str]) -> ReportSources:
    """Recognise RUN_OR_EXPORT_OR_PIPELINE_RUN; one clear error when it is none of them."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{path}: not a folder (give a training run, an export folder or a pipeline run)")
    if (folder / "stages.json").is_file() or (folder / "summary.json").is_file():
        run = folder / "train" if _is_run(folder / "train") else None
        export = folder / "export" if is_export(folder / "export") else None
        annotation = folder / "annotation.npz" if (folder / "annotation.npz").is_file() else None
        bench = folder / "bench.json" if (folder / "bench.json").is_file() else None
        summary = folder / "summary.json" if (folder / "summary.json").is_file() else None
        return ReportSources(folder, "pipeline run", run, export, annotation or (run and _annotation_of(run)), bench, summary)
    if _is_run(folder):
        return ReportSources(folder, "training run", folder, None, _annotation_of(folder), None, None)
    if is_export(folder):
        run = None
        named = read_json_object(folder / "parity.json").get("run")
        if isinstance(named, str) and named and _is_run(Path(named)):
            run = Path(named)
        bench = folder / "bench.json" if (folder / "bench.json").is_file() else None
        return ReportSources(folder, "export folder", run, folder, run and _annotation_of(run), bench, None)
    raise UserError(
        f"{path}: not a training run (config.json + metrics.jsonl), an export folder (parity.json or "
        f"{', '.join(FILE_NAMES[:2])}, ...) or a pipeline run (stages.json)"
    )
