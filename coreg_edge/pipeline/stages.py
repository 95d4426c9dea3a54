"""The four stages of one run_recipe invocation, each skipped when its outputs are intact and unchanged."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coreg_edge import __version__
from coreg_edge.annotate.api import annotate
from coreg_edge.exporters import (
    export as exporter,  # exporter.export_run, trainer.train: tests replace them there
)
from coreg_edge.exporters.errors import ParityError
from coreg_edge.exporters.int8 import choose_route
from coreg_edge.exporters.targets import resolve_target
from coreg_edge.formats import FILE_NAMES
from coreg_edge.logs import info
from coreg_edge.pipeline.calls import _annotate_settings, annotate_call, bench_call, export_call, train_call
from coreg_edge.pipeline.fingerprints import StageState, _without, fingerprint, input_fingerprint
from coreg_edge.pipeline.layout import (
    ANNOTATION_FILE,
    BENCH_FILE,
    EXPORT_DIR,
    REPORT_FILE,
    STAGES,
    SUMMARY_FILE,
    TEMPLATES_FILE,
    TRAIN_DIR,
    _read,
)
from coreg_edge.recipe import Recipe
from coreg_edge.runtime.bench_formats import bench_formats
from coreg_edge.settings import AnnotateSettings, BenchSettings, ExportSettings, TrainSettings
from coreg_edge.settings.fields import execution_keys, unset_keys
from coreg_edge.training import run_folder as rf
from coreg_edge.training import trainer
from coreg_edge.utils import atomic_path, write_json


class _Run:
    """One invocation of run_recipe: the folder, the records, and what this invocation did per stage."""

    def __init__(self, recipe: Recipe, out: Path, quiet: bool):
        self.recipe = recipe
        self.out = out
        self.quiet = quiet  # the stages' own calls are told too (annotate's and export's progress bars)
        self.state = StageState(out, recipe)
        self.report: dict[str, dict[str, Any]] = {}

    # -- generic skip / record logic -------------------------------------------------------------------

    def unchanged(self, stage: str, fp: str) -> bool:
        record = self.state.record(stage)
        return (
            record.get("status") == "done"
            and record.get("fingerprint") == fp
            and self.state.outputs_intact(self.out, record)
        )

    def begin(self, stage: str, fp: str, settings: dict[str, Any], inputs: dict[str, Any]) -> None:
        for stale in (SUMMARY_FILE, REPORT_FILE):  # never a summary or report that no longer describes RUN
            (self.out / stale).unlink(missing_ok=True)
        self.state.set(
            stage, {"status": "started", "fingerprint": fp, "settings": settings, "inputs": inputs}
        )

    def finish(self, stage: str, outputs: Sequence[str], seconds: float, status: str) -> None:
        record = dict(self.state.record(stage))
        record.update(
            status="done",
            outputs=self.state.output_digests(self.out, outputs),
            seconds=round(seconds, 3),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            coreg_edge_version=__version__,
        )
        self.state.set(stage, record)
        self.report[stage] = {"status": status, "seconds": round(seconds, 3)}

    def skip(self, stage: str, index: int) -> None:
        self.report[stage] = {"status": "skipped", "seconds": 0.0}
        info(
            f"[{index}/{len(STAGES)}] {stage}: skipped (outputs complete; settings and inputs unchanged)"
        )

    def outputs(self, stage: str) -> dict[str, str]:
        return dict(self.state.record(stage).get("outputs") or {})

    # -- annotate ----------------------------------------------------------------------------------------

    def annotate(self) -> None:
        recipe = self.recipe
        call = annotate_call(recipe, self.out)
        settings = _annotate_settings(recipe, call)
        inputs = {"data": input_fingerprint(recipe.data["train"])}
        if settings.get("annotator", "clip") == "clip":
            for key in ("templates", "pretrained", "clip_model"):
                if isinstance(settings.get(key), str):
                    inputs[key] = input_fingerprint(settings[key])
        if settings.get("examples"):  # the example images themselves: changed examples re-annotate
            inputs["examples"] = input_fingerprint(settings["examples"])
        fp = fingerprint(settings, inputs)
        if self.unchanged("annotate", fp):
            return self.skip("annotate", 1)
        info(f"[1/{len(STAGES)}] annotate: {recipe.data['train']} ({settings.get('annotator', 'clip')})")
        self.begin("annotate", fp, settings, inputs)
        began = time.perf_counter()
        templates = recipe.section("annotate").get("templates")
        if isinstance(templates, list):
            with atomic_path(self.out / TEMPLATES_FILE) as tmp:
                tmp.write_text("".join(t + "\n" for t in templates), encoding="utf-8")
        annotate(recipe.data["train"], self.out / ANNOTATION_FILE, AnnotateSettings(**call), quiet=self.quiet,
                 overwrite=True)  # the run's own file, whose inputs or settings changed
        self.finish("annotate", [ANNOTATION_FILE], time.perf_counter() - began, "ran")

    # -- train (and select) ------------------------------------------------------------------------------

    def train(self) -> None:
        call = train_call(self.recipe)
        settings = _without(TrainSettings(**call).to_dict(), execution_keys(TrainSettings))
        inputs: dict[str, Any] = {"annotation": self.outputs("annotate")}
        for key in ("eval_data", "val_data"):
            if call.get(key):
                inputs[key] = input_fingerprint(call[key])
        weights = call.get("pretrained_backbone")
        if weights and weights != "timm":  # a FILE replaced in place trains again
            inputs["pretrained_backbone"] = input_fingerprint(weights)
        fp = fingerprint(settings, inputs)
        if self.unchanged("train", fp):
            return self.skip("train", 2)
        folder = self.out / TRAIN_DIR
        record = self.state.record("train")
        same = record.get("fingerprint") == fp and record.get("status") in ("started", "done")
        crashed_after_training = same and record.get("status") == "started" and bool(_train_outputs(folder))
        finished = (folder / rf.SELECTION).exists()
        resumable = (
            same and not finished and (folder / rf.CONFIG).exists() and (folder / rf.CHECKPOINT).exists()
        )
        self.begin("train", fp, settings, inputs)
        began = time.perf_counter()
        if crashed_after_training:
            status = "recovered"  # finished before the record was written: nothing to redo
            info(f"[2/{len(STAGES)}] train: finished earlier, recording it")
        elif resumable:
            status = "resumed"
            info(f"[2/{len(STAGES)}] train: resuming the interrupted run in {folder}")
            trainer.train(self.out / ANNOTATION_FILE, folder, resume=True, quiet=self.quiet)
        else:
            status = "ran"
            if folder.exists():
                shutil.rmtree(folder)
            info(f"[2/{len(STAGES)}] train: {call.get('method', 'coreg')} -> {folder}")
            trainer.train(self.out / ANNOTATION_FILE, folder, TrainSettings(**call), quiet=self.quiet)
        outputs = [str(Path(TRAIN_DIR) / name) for name in _train_outputs(folder)]
        self.finish("train", outputs, time.perf_counter() - began, status)

    # -- export (fp32 + int8, parity) ----------------------------------------------------------------------

    def export(self) -> None:
        call = export_call(self.recipe)
        chosen = ExportSettings(**call)
        settings = _without(dataclasses.asdict(chosen), execution_keys(ExportSettings))
        settings["formats"] = [row.name for row in chosen.chosen_formats()]
        settings.pop("int8", None)  # counted in formats
        if not any(row.ort_format for row in chosen.chosen_formats()):  # how ORT files are made: only with some
            settings.pop("ort_style", None)
            settings.pop("ort_platform", None)
        if chosen.makes_int8:  # auto is this machine's CPU; installing an emulator changes the check
            target = resolve_target(settings.get("target", "auto"))
            settings["target"] = target.name
            settings["checked_with"] = choose_route(target, emulate=settings.get("emulate", True)).kernels
        inputs = {"train": self.outputs("train")}
        fp = fingerprint(settings, inputs)
        if self.unchanged("export", fp):
            return self.skip("export", 3)
        folder = self.out / EXPORT_DIR
        info(f"[3/{len(STAGES)}] export: {', '.join(settings['formats'])} -> {folder}")
        self.begin("export", fp, settings, inputs)
        began = time.perf_counter()
        try:
            report = exporter.export_run(self.out / TRAIN_DIR, folder, ExportSettings(**call), quiet=self.quiet)
        except ParityError as exc:
            record = dict(self.state.record("export"), status="failed", reason=str(exc))
            self.state.set("export", record)
            self.report["export"] = {"status": "failed", "seconds": round(time.perf_counter() - began, 3)}
            raise
        outputs = [str(Path(EXPORT_DIR) / name) for name in report["files"]] + [
            str(Path(EXPORT_DIR) / "parity.json")
        ]
        self.finish("export", outputs, time.perf_counter() - began, "ran")

    # -- bench -------------------------------------------------------------------------------------------

    def bench(self) -> None:
        call = bench_call(self.recipe)
        bench = BenchSettings(**call)
        settings = _without(dataclasses.asdict(bench), execution_keys(BenchSettings) | unset_keys(bench))
        models = {rel: d for rel, d in self.outputs("export").items() if Path(rel).name in FILE_NAMES}
        fp = fingerprint(settings, {"models": models})
        if self.unchanged("bench", fp):
            return self.skip("bench", 4)
        info(
            f"[4/{len(STAGES)}] bench: {', '.join(Path(rel).name for rel in models)} interleaved, "
            f"batch sizes {', '.join(map(str, settings['batch_sizes']))}"
        )
        self.begin("bench", fp, settings, {"models": models})
        began = time.perf_counter()
        progress = not self.quiet and sys.stderr.isatty()
        report = bench_formats(self.out / EXPORT_DIR, BenchSettings(**call), progress=progress)
        write_json(self.out / BENCH_FILE, report.to_dict())
        self.finish("bench", [BENCH_FILE], time.perf_counter() - began, "ran")


def _train_outputs(folder: Path) -> list[str]:
    """What export reads from a finished training run (metrics and checkpoint are not part of it);
    [] unless selection.json and every peer the method trains are there."""
    config = _read(folder / rf.CONFIG) or {}
    peers = rf.PEERS if config.get("method") == "coreg" else rf.PEERS[:1]
    names = [rf.CONFIG, rf.SELECTION] + [rf.peer_file(folder, p).name for p in peers]
    return names if all((folder / name).exists() for name in names) else []
