"""`run_recipe()`: a recipe -> one run folder, stage by stage, resumable (the library behind `coreg-edge run`).

    RUN/recipe.json       the resolved recipe (overrides applied) this folder was last run with
    RUN/annotation.npz    annotate
    RUN/train/            train + label-free peer selection (a `coreg-edge train` run folder)
    RUN/export/           export fp32 (+ int8) with parity: model.onnx, model.int8.onnx, parity.json
    RUN/bench.json        bench: the fp32 model timed against the int8 one (`coreg-edge bench --json`)
    RUN/stages.json       per stage: status, fingerprint, resolved settings, input and output digests
    RUN/summary.json      the headline numbers and where the deployable model is (written last)

Why fingerprints: a paper run is days of GPU time and a demo is minutes of CPU, and both get interrupted
or re-run with one setting changed. A stage is skipped when its record in stages.json says done, its
fingerprint (sha256 of its resolved settings + its inputs' digests) is unchanged, and every output it
recorded is still there with the same digest. Inputs are the previous stage's outputs (and the data), so a
change anywhere re-runs exactly the stages downstream of it. Settings that change how, not what, is
computed (device, workers, compile, channels_last, batch size of annotation, download, data_dir) are left
out of fingerprints. Training that stopped part-way (a checkpoint, no selection.json) with an unchanged
fingerprint resumes from its last epoch instead of starting over.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from coreg_edge import __version__
from coreg_edge.errors import UserError
from coreg_edge.recipe import Recipe, load_recipe
from coreg_edge.utils import atomic_path

STAGES = ("annotate", "train", "export", "bench")
STATE_FORMAT_VERSION = 1
RECIPE_FILE = "recipe.json"
ANNOTATION_FILE = "annotation.npz"
TEMPLATES_FILE = "templates.txt"
TRAIN_DIR = "train"
EXPORT_DIR = "export"
BENCH_FILE = "bench.json"
STATE_FILE = "stages.json"
SUMMARY_FILE = "summary.json"

# How, not what: never part of a fingerprint (changing them must not re-run a stage).
EXECUTION_KEYS = frozenset(
    {"device", "workers", "compile", "channels_last", "quiet", "download", "data_dir", "strict"}
)
_BIG_INPUT = 64 * 1024 * 1024  # user files above this are fingerprinted by size + mtime, not content


class PipelineInterrupted(UserError):
    """Ctrl-C (or a kill) during a stage; finished stages are kept and the next run continues."""

    exit_code = 130


# ---------------------------------------------------------------------------------------------------------
# Fingerprints


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(spec: str | os.PathLike[str] | None) -> str | None:
    """What identifies a user input: a built-in dataset by name, a file by content (large: size + mtime),
    a folder by its listing (relative path, size, mtime of every file)."""
    if spec is None:
        return None
    from coreg_edge.data.builtin import parse_builtin

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
        return f"sha256:{_sha256_file(path)}"
    listing = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(root) / name
            with contextlib.suppress(OSError):
                stat = full.stat()
                listing.append((str(full.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return f"folder:{_digest_json(listing)}"


def _without(settings: Mapping[str, Any], keys: frozenset[str] = EXECUTION_KEYS) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in keys}


def _defaults(func: Callable[..., Any]) -> dict[str, Any]:
    """Keyword defaults of a library function: recipes leave keys out, fingerprints record the value used."""
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _accepted(func: Callable[..., Any], options: Mapping[str, Any], section: str) -> dict[str, Any]:
    """Fail in one line when a recipe key is not an argument of the installed library function."""
    params = inspect.signature(func).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise UserError(
            f"{section}.{unknown[0]}: not supported by this version's {func.__name__}() "
            f"(it takes {', '.join(n for n in params if params[n].kind is inspect.Parameter.KEYWORD_ONLY)})"
        )
    return dict(options)


# ---------------------------------------------------------------------------------------------------------
# Stage records (RUN/stages.json)


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
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")

    def digest(self, path: Path) -> str | None:
        """sha256 of an output file (cached by size + mtime within this process); None when missing."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = _sha256_file(path)
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


# ---------------------------------------------------------------------------------------------------------
# Stage settings: the exact keyword arguments each library function gets


def annotate_call(recipe: Recipe, run: Path) -> dict[str, Any]:
    """Keyword arguments for annotate() (data and out apart), from [data], [classes], [annotate]."""
    data = recipe.data
    options = recipe.section("annotate")
    templates = options.get("templates")
    if isinstance(templates, list):  # inline list: annotate() reads template sets or files
        options["templates"] = str(run / TEMPLATES_FILE)
    classes = recipe.section("classes")
    call = {
        **options,
        "classes": classes.get("names"),
        "seed": recipe.seed,
        "device": recipe.device,
        "download": bool(data.get("download", False)),
        "data_dir": data.get("data_dir"),
        "channels": recipe.section("train").get("channels"),
    }
    return call


def _annotate_settings(recipe: Recipe, call: Mapping[str, Any]) -> dict[str, Any]:
    from coreg_edge.annotate.api import annotate

    resolved = {**_defaults(annotate), **call, "data": recipe.data["train"]}
    resolved["wording"] = recipe.section("classes").get("wording")
    resolved["templates"] = recipe.section("annotate").get("templates", resolved["templates"])
    resolved.pop("out", None)
    resolved.pop("batch_size", None)  # how many images per forward pass: not what the labels are
    if resolved["annotator"] == "synthetic":
        for key in ("clip_model", "pretrained", "mode", "k", "ratio", "templates", "wording"):
            resolved.pop(key, None)
    else:
        for key in ("partial_rate", "noise_rate"):
            resolved.pop(key, None)
    return _without(resolved)


def train_call(recipe: Recipe) -> dict[str, Any]:
    """Keyword arguments for train() (TrainSettings fields), from [train], [train.coreg] and [data]."""
    data = recipe.data
    options = recipe.section("train")
    options.pop("coreg", None)
    return {
        **options,
        "coreg": recipe.section("train.coreg"),
        "seed": recipe.seed,
        "device": recipe.device,
        "eval_data": data.get("eval"),
        "val_data": data.get("val"),
        "download": bool(data.get("download", False)),
    }


def export_call(recipe: Recipe) -> dict[str, Any]:
    return {**recipe.section("export"), "seed": recipe.seed}


def bench_call(recipe: Recipe) -> dict[str, Any]:
    bench = recipe.section("bench")
    bench.setdefault("batch_sizes", [1, 32])
    return {**bench, "seed": recipe.seed}


# ---------------------------------------------------------------------------------------------------------
# The stages


class _Run:
    """One invocation of run_recipe: the folder, the records, and what this invocation did per stage."""

    def __init__(self, recipe: Recipe, out: Path, quiet: bool, log: Callable[[str], None]):
        self.recipe = recipe
        self.out = out
        self.quiet = quiet
        self.log = log
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
        (self.out / SUMMARY_FILE).unlink(missing_ok=True)  # never a summary that no longer describes RUN
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
        self.log(
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
        fp = fingerprint(settings, inputs)
        if self.unchanged("annotate", fp):
            return self.skip("annotate", 1)
        self.log(f"[1/{len(STAGES)}] annotate: {recipe.data['train']} ({settings.get('annotator', 'clip')})")
        self.begin("annotate", fp, settings, inputs)
        began = time.perf_counter()
        templates = recipe.section("annotate").get("templates")
        if isinstance(templates, list):
            with atomic_path(self.out / TEMPLATES_FILE) as tmp:
                tmp.write_text("".join(t + "\n" for t in templates), encoding="utf-8")
        _annotate(recipe, call, self.out / ANNOTATION_FILE, self.quiet)
        self.finish("annotate", [ANNOTATION_FILE], time.perf_counter() - began, "ran")

    # -- train (and select) ------------------------------------------------------------------------------

    def train(self) -> None:
        from coreg_edge.training import run_folder as rf
        from coreg_edge.training.settings import TrainSettings
        from coreg_edge.training.trainer import train

        call = train_call(self.recipe)
        settings = _without(TrainSettings(**call).to_dict())
        inputs: dict[str, Any] = {"annotation": self.outputs("annotate")}
        for key in ("eval_data", "val_data"):
            if call.get(key):
                inputs[key] = input_fingerprint(call[key])
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
            self.log(f"[2/{len(STAGES)}] train: finished earlier, recording it")
        elif resumable:
            status = "resumed"
            self.log(f"[2/{len(STAGES)}] train: resuming the interrupted run in {folder}")
            train(self.out / ANNOTATION_FILE, folder, resume=True, quiet=self.quiet)
        else:
            status = "ran"
            if folder.exists():
                shutil.rmtree(folder)
            self.log(f"[2/{len(STAGES)}] train: {call.get('method', 'coreg')} -> {folder}")
            train(self.out / ANNOTATION_FILE, folder, quiet=self.quiet, **call)
        outputs = [str(Path(TRAIN_DIR) / name) for name in _train_outputs(folder)]
        self.finish("train", outputs, time.perf_counter() - began, status)

    # -- export (fp32 + int8, parity) ----------------------------------------------------------------------

    def export(self) -> None:
        from coreg_edge.exporters.errors import ParityError
        from coreg_edge.exporters.pipeline import export_run

        call = _accepted(export_run, export_call(self.recipe), "export")
        settings = _without({**_defaults(export_run), **call})
        settings.pop("quiet", None)
        inputs = {"train": self.outputs("train")}
        fp = fingerprint(settings, inputs)
        if self.unchanged("export", fp):
            return self.skip("export", 3)
        folder = self.out / EXPORT_DIR
        self.log(f"[3/{len(STAGES)}] export: {'fp32 + int8' if settings.get('int8') else 'fp32'} -> {folder}")
        self.begin("export", fp, settings, inputs)
        began = time.perf_counter()
        try:
            report = export_run(self.out / TRAIN_DIR, folder, quiet=self.quiet, **call)
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
        from coreg_edge.runtime.bench import run_bench

        call = _accepted(run_bench, bench_call(self.recipe), "bench")
        settings = _without({**_defaults(run_bench), **call})
        for key in ("progress", "vs"):
            settings.pop(key, None)
        models = {rel: d for rel, d in self.outputs("export").items() if rel.endswith(".onnx")}
        fp = fingerprint(settings, {"models": models})
        if self.unchanged("bench", fp):
            return self.skip("bench", 4)
        fp32, int8 = self.out / EXPORT_DIR / "model.onnx", self.out / EXPORT_DIR / "model.int8.onnx"
        has_int8 = str(Path(EXPORT_DIR) / "model.int8.onnx") in models
        self.log(
            f"[4/{len(STAGES)}] bench: {'model.onnx vs model.int8.onnx' if has_int8 else 'model.onnx'}, "
            f"batch sizes {', '.join(map(str, call['batch_sizes']))}"
        )
        self.begin("bench", fp, settings, {"models": models})
        began = time.perf_counter()
        progress = not self.quiet and sys.stderr.isatty()
        report = run_bench(fp32, vs=int8 if has_int8 else None, progress=progress, **call)
        with atomic_path(self.out / BENCH_FILE) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        self.finish("bench", [BENCH_FILE], time.perf_counter() - began, "ran")


def _train_outputs(folder: Path) -> list[str]:
    """What export reads from a finished training run (metrics and checkpoint are not part of it);
    [] unless selection.json and every peer the method trains are there."""
    from coreg_edge.training import run_folder as rf

    config = _read(folder / rf.CONFIG) or {}
    peers = rf.PEERS if config.get("method") == "coreg" else rf.PEERS[:1]
    names = [rf.CONFIG, rf.SELECTION] + [rf.peer_file(folder, p).name for p in peers]
    return names if all((folder / name).exists() for name in names) else []


def _annotate(recipe: Recipe, call: dict[str, Any], out: Path, quiet: bool) -> None:
    """annotate() with the recipe's class wording (prompts only; the model answers with the plain names)."""
    from coreg_edge.annotate.api import annotate

    wording = recipe.section("classes").get("wording")
    annotate(recipe.data["train"], out, wording=wording, quiet=quiet, **call)


# ---------------------------------------------------------------------------------------------------------
# Summary


def _annotation_summary(path: Path) -> dict[str, Any]:
    from coreg_edge.annotation_file import load

    stats = load(path).stats()
    return {
        "path": ANNOTATION_FILE,
        **{
            k: stats[k]
            for k in ("num_items", "num_classes", "mean_candidates", "coverage", "zero_shot_accuracy")
        },
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def build_summary(
    run: Path, recipe: Recipe, report: Mapping[str, Any], error: str | None = None
) -> dict[str, Any]:
    """summary.json: headline numbers of every stage, from the files the stages wrote."""
    summary: dict[str, Any] = {
        "recipe": recipe.name,
        "recipe_source": recipe.source,
        "run": str(run.resolve()),
        "coreg_edge_version": __version__,
        "ok": error is None,
        "error": error,
        "annotation": None,
        "train": None,
        "export": None,
        "bench": None,
        "deployable": None,
        "stages": {
            stage: dict(report.get(stage) or {"status": "not run", "seconds": 0.0}) for stage in STAGES
        },
    }
    records = (_read(run / STATE_FILE) or {}).get("stages", {})
    for stage, info in summary["stages"].items():  # how long the stage took when it made its outputs
        info["produced_in_seconds"] = (records.get(stage) or {}).get("seconds")
    summary["seconds"] = round(sum(s["seconds"] for s in summary["stages"].values()), 3)
    if (run / ANNOTATION_FILE).exists():
        summary["annotation"] = _annotation_summary(run / ANNOTATION_FILE)
    selection = _read(run / TRAIN_DIR / "selection.json")
    if selection:
        summary["train"] = {
            "path": TRAIN_DIR,
            "method": selection.get("method"),
            "backbone": selection.get("backbone"),
            "epochs": selection.get("epochs"),
            "selected": selection.get("selected"),
            "reason": selection.get("reason"),
            "test_accuracy": selection.get("test_accuracy"),
            "best_epoch": selection.get("best_epoch"),
        }
    parity = _read(run / EXPORT_DIR / "parity.json")
    if parity:
        accuracy = parity.get("test_accuracy") or {}
        export: dict[str, Any] = {"path": EXPORT_DIR, "ok": parity.get("ok"), "reason": parity.get("reason")}
        for kind, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            checks = (parity.get("checks") or {}).get(name)
            if checks is None:
                export[kind] = None
                continue
            published = (run / EXPORT_DIR / name).exists()
            export[kind] = {
                "path": str(Path(EXPORT_DIR) / name) if published else None,
                "bytes": ((parity.get("files") or {}).get(name) or {}).get("bytes"),
                "test_accuracy": accuracy.get(kind),
                "parity_ok": all(c.get("ok") for c in checks.values()) and not parity.get("problems"),
            }
        summary["export"] = export
        for kind in ("int8", "fp32"):
            entry = export.get(kind)
            if entry and entry["path"] and entry["parity_ok"] and parity.get("ok"):
                summary["deployable"] = entry["path"]
                break
    bench = _read(run / BENCH_FILE) if summary["stages"]["bench"]["status"] != "not run" else None
    if bench:
        row: dict[str, Any] = {
            "fp32_ms_b1": None,
            "int8_ms_b1": None,
            "fp32_ms_b32": None,
            "int8_ms_b32": None,
        }
        for kind, part in (("fp32", bench), ("int8", bench.get("vs"))):
            for result in (part or {}).get("results", []):
                row[f"{kind}_ms_b{result['batch_size']}"] = result["p50_ms"]
        row["provider"] = bench.get("provider")
        row["threads"] = bench.get("threads")
        summary["bench"] = row
    return summary


def _fmt(value: Any, spec: str = ".4f", missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The table `coreg-edge run` prints at the end."""
    run = Path(summary["run"])
    lines = [f"coreg-edge run {summary['recipe']} -> {run} ({summary['seconds']:.1f} s this time)"]
    lines.append(f"  {'stage':<9} {'status':<11} {'seconds':>8} {'when made':>10}")
    for stage, info in summary["stages"].items():
        made = info.get("produced_in_seconds")
        lines.append(
            f"  {stage:<9} {info['status']:<11} {info['seconds']:>8.1f} {_fmt(made, '.1f', '-'):>10}"
        )
    ann = summary.get("annotation")
    if ann:
        coverage = "n/a" if ann["coverage"] is None else f"{ann['coverage']:.1%}"
        lines.append(
            f"annotation  {ann['num_items']} items, {ann['num_classes']} classes, "
            f"mean set size {ann['mean_candidates']:.2f}, true label in set {coverage}"
        )
    train = summary.get("train")
    if train:
        acc = train.get("test_accuracy") or {}
        lines.append(
            f"train       {train['method']} {train['backbone']}, {train['epochs']} epochs; selected peer "
            f"{train['selected']} ({train['reason']})"
        )
        lines.append(
            "test acc    "
            + ", ".join(f"{k} {_fmt(acc.get(k))}" for k in ("a", "b", "ensemble", "selected") if k in acc)
        )
    export = summary.get("export")
    bench = summary.get("bench") or {}
    if export:
        lines.append(
            f"  {'model':<6} {'file':<24} {'MB':>7} {'test acc':>9} {'parity':>7} {'p50 b1':>9} {'p50 b32':>9}"
        )
        for kind in ("fp32", "int8"):
            entry = export.get(kind)
            if not entry:
                continue
            size = "n/a" if entry["bytes"] is None else f"{entry['bytes'] / 1e6:.2f}"
            lines.append(
                f"  {kind:<6} {entry['path'] or '(rejected)':<24} {size:>7} {_fmt(entry['test_accuracy']):>9} "
                f"{'ok' if entry['parity_ok'] else 'FAIL':>7} {_fmt(bench.get(f'{kind}_ms_b1'), '.3f') + ' ms':>9} "
                f"{_fmt(bench.get(f'{kind}_ms_b32'), '.3f') + ' ms':>9}"
            )
    if summary.get("error"):
        lines.append(f"FAILED: {summary['error']}")
    if summary.get("deployable"):
        lines.append(f"deployable model: {run / summary['deployable']}")
        lines.append(f"  try it: coreg-edge predict {run / summary['deployable']} IMAGE...")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The entry point


@contextlib.contextmanager
def _data_dir(data_dir: str | None) -> Iterator[None]:
    """Built-in datasets are found through COREG_EDGE_DATA in every stage; set it for this run only."""
    if not data_dir:
        yield
        return
    before = os.environ.get("COREG_EDGE_DATA")
    os.environ["COREG_EDGE_DATA"] = str(Path(data_dir).expanduser())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COREG_EDGE_DATA", None)
        else:
            os.environ["COREG_EDGE_DATA"] = before


def _check_run_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a folder for the run")
    if out.is_dir() and not (out / STATE_FILE).exists() and any(out.iterdir()):
        raise UserError(
            f"--out {out}: exists and is not a coreg-edge run folder (no {STATE_FILE}); choose a new or empty folder"
        )


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def run_recipe(
    recipe: str | os.PathLike[str] | Recipe,
    out: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    quiet: bool = False,
) -> dict[str, Any]:
    """Annotate -> train (+ select) -> export fp32/int8 (+ parity) -> bench into the run folder `out`.

    Stages whose outputs are complete and whose settings and inputs are unchanged are skipped, so running
    it again after an interruption continues where it stopped. `overrides` are `--set` strings
    (`train.epochs=5`). Returns the summary (also RUN/summary.json, written atomically last).
    """
    recipe = load_recipe(recipe, overrides)
    out = Path(out) if out is not None else Path("runs") / recipe.name
    _check_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    if _read(out / RECIPE_FILE) != recipe.to_dict():
        _write_json(out / RECIPE_FILE, recipe.to_dict())

    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    run = _Run(recipe, out, quiet, log)
    stage = STAGES[0]
    try:
        with _data_dir(recipe.data.get("data_dir")):
            for stage in STAGES:
                began = time.perf_counter()
                try:
                    getattr(run, stage)()
                except (KeyboardInterrupt, _interrupted_types()) as exc:
                    run.report[stage] = {
                        "status": "interrupted",
                        "seconds": round(time.perf_counter() - began, 3),
                    }
                    hint = ", training resumes from its last finished epoch" if stage == "train" else ""
                    raise PipelineInterrupted(
                        f"interrupted during {stage}; run the same command again (same --out and --set) to "
                        f"continue: finished stages are skipped{hint}"
                    ) from exc
    except PipelineInterrupted:
        raise
    except UserError as exc:
        if stage == "export" and run.report.get("export", {}).get("status") == "failed":
            summary = build_summary(out, recipe, run.report, error=str(exc))
            _write_json(out / SUMMARY_FILE, summary)
            exc.summary = summary  # type: ignore[attr-defined]
        raise
    summary = build_summary(out, recipe, run.report)
    _write_json(out / SUMMARY_FILE, summary)
    return summary


def _interrupted_types() -> type[BaseException]:
    """The trainer's own Ctrl-C error (it checkpoints, then raises it)."""
    from coreg_edge.training.trainer import Interrupted

    return Interrupted
