"""`export_run` and `check_export`: the library functions behind `coreg-edge export` (same arguments).

export_run: run folder -> every chosen format's file (coreg_edge/formats.py, one row each; built by
exporters/builders.py in table order: fp32 first, each other file from the peer or from its source format)
-> parity on real images, each file by its own row's check set -> publish each file that passed, keep each
that failed as NAME.rejected (an earlier good file under NAME stays), parity.json last.
check_export: parity again on the files already in DIR (`--check-only`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from coreg_edge import __version__
from coreg_edge.errors import UserError
from coreg_edge.exporters.builders import (
    Built,
    ExportContext,
    finalize,
    measure_file,
    open_classifier,
    ort_conversion,
)
from coreg_edge.exporters.errors import ExportError, ParityError
from coreg_edge.exporters.images import ImagePlan, plan_images
from coreg_edge.exporters.int8 import Route, choose_route
from coreg_edge.exporters.metadata import get_metadata
from coreg_edge.exporters.parity import Logits, Thresholds, collect_logits, evaluate, first_failure
from coreg_edge.exporters.staging import FP32_NAME, PARITY_NAME, Staging, check_export_out
from coreg_edge.exporters.targets import AUTO, TARGETS, apply_overrides, resolve_target
from coreg_edge.formats import FORMAT_NAMES, FORMATS, ExportFormat, file_passed, format_of_file, get_format
from coreg_edge.locks import locks_output
from coreg_edge.runs import FinishedRun
from coreg_edge.runtime.metadata import ModelError
from coreg_edge.settings.export import ExportSettings
from coreg_edge.settings.fields import build
from coreg_edge.utils import one_line, read_json_object, resolve_device, resolve_function, write_json


def _problems(folder: Path, names: list[str], config: dict[str, Any], batch_size: int) -> list[str]:
    """What is wrong with the files apart from their numbers: class names, preprocessing."""
    classifiers = {name: open_classifier(folder / name, batch_size) for name in names}
    problems = [
        f"{name}: its class names differ from the run's"
        for name, classifier in classifiers.items()
        if list(classifier.class_names) != list(config["class_names"])
    ]
    if len({classifier.config for classifier in classifiers.values()}) > 1:
        problems.append("the files' metadata describe different preprocessing")
    return problems


def parity_report(
    measured: Logits,
    folder: Path,
    names: list[str],
    plan: ImagePlan,
    config: dict[str, Any],
    *,
    limits: Thresholds,
    batch_size: int,
) -> dict[str, Any]:
    """The report's check part for every file in `names` (inside `folder`), from logits measured already."""
    problems = _problems(folder, names, config, batch_size)
    for name in names:  # a file under another format's name (swapped or renamed) is judged by the wrong checks
        try:
            made_as = (get_metadata(folder / name) or {}).get("format")
        except ModelError:
            continue
        if made_as is not None and made_as != _row(name).name:
            problems.append(f"{name}: its metadata says it is a {made_as} file; it belongs under {get_format(made_as).file_name}"
                            if made_as in FORMAT_NAMES else f"{name}: its metadata names an unknown format {made_as!r}")  # fmt: skip
    checks, test_accuracy = evaluate(measured, {name: _row(name) for name in names}, limits)
    count = len(measured.reference)
    if count < limits.min_images:
        problems.append(
            f"parity ran on {count} images, fewer than {limits.min_images} "
            "(lower --parity-images for a smaller data set)"
        )
    return {
        "images": {
            "count": count,
            "batch_size": batch_size,
            "sources": [f"{part.name} ({part.role}, {len(part)})" for part in plan.parity],
            "parts": [part.describe() for part in plan.parity],
            "skipped": measured.skipped,
        },
        "thresholds": limits.to_dict(),
        "checks": checks,
        "test_accuracy": test_accuracy,
        "problems": problems,
    }


def _finish(report: dict[str, Any], folder: Path, names: list[str]) -> dict[str, Any]:
    """Add ok, reason and file sizes; keys in a reader-friendly order."""
    reason = first_failure(report)
    files = {name: {"format": _row(name).name, "bytes": (folder / name).stat().st_size} for name in names}
    if FP32_NAME in files:
        for name, entry in files.items():
            if name != FP32_NAME:
                entry["vs_fp32"] = round(entry["bytes"] / files[FP32_NAME]["bytes"], 4)
    return {"ok": reason is None, "reason": reason, **report, "files": files}


def _row(file_name: str) -> ExportFormat:
    row = format_of_file(file_name)
    if row is None:
        raise ValueError(f"{file_name} is no export format's file")
    return row


@locks_output("out", "export folder")
def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ExportSettings | None = None,
    *,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Export RUN's peer to OUT in every chosen format (`formats`, coreg_edge/formats.py; `int8` adds
    int8), check parity, return the report.

    `settings` (an ExportSettings) and/or its fields as keywords (keywords win).
    int8: `target` (targets.py; auto = this CPU) gives the settings, the explicit options override them;
    when they fail parity, the recovery attempts follow unless `recover` is false. `emulate`: check a
    target this CPU cannot run on an emulator when one is installed (emulation.py).
    Raises ParityError (after writing parity.json with ok=false) when a check fails: the files that passed
    are published all the same, a failed one is left as NAME.rejected, and an earlier export's file under
    its name is kept.
    """
    s = build(ExportSettings, settings, options)
    check_export_out(out)  # before any work
    rows = s.chosen_formats()
    trained = FinishedRun(run)
    config = trained.config
    resolved = trained.resolve_peer(s.peer)
    chosen = resolve_target(s.target)
    int8 = s.makes_int8
    fine_tunes = int8 and s.fine_tunes  # --qat may run: its images are planned, its device checked
    module = trained.network(resolved)
    transform = trained.preprocess
    plan = plan_images(
        config, run, calibration_images=s.calibration_images, parity_images=s.parity_images, seed=s.seed,
        calibrate=int8, fine_tune_images=s.qat_images if fine_tunes else 0, data=s.data, eval_data=s.eval_data,
    )  # fmt: skip
    if fine_tunes:
        resolve_device(s.device)  # --device cuda without a GPU: one line now, not a failed attempt later
    limits = Thresholds(min_images=s.parity_images)
    spec = trained.spec(resolved)
    with Staging(out) as stage:
        ctx = ExportContext(
            stage=stage, module=module, input_shape=transform.shape, spec=spec, settings=s, plan=plan,
            limits=limits, target=chosen, keep_inputs=len(rows) > 1, quiet=quiet,
            run_config=config,
            quant=apply_overrides(chosen.settings, **s.quantization_overrides()) if int8 else None,
        )  # fmt: skip
        errors: dict[str, str] = {}  # by file name: why that format's file was not made
        try:
            for row in rows:
                built = ctx.built[row.name] = _build(ctx, row)
                if built.error is not None:
                    errors[row.file_name] = built.error
                elif row.file_name not in ctx.measured.onnx:
                    ctx.measured.onnx[row.file_name] = built.logits
            report, passed = _judge_and_finalize(ctx, rows, errors, config)
        finally:
            if ctx.measured is not None:
                ctx.measured.inputs = None  # the memory map closes before the staging folder goes
        names = [row.file_name for row in rows if row.file_name in ctx.measured.onnx]
        header: dict[str, Any] = {
            "run": str(Path(run).resolve()),  # found again from any working folder (report, --check-only)
            "peer": resolved,
            "coreg_edge_version": __version__,
            "export": {
                "exporter": "torch.onnx dynamo" if s.dynamo else "torch.onnx TorchScript",
                "opset": ctx.opset,
                "formats": [row.name for row in rows],
            },
            "calibration": None,
            "quantization": None,
            "int8": None,
        }
        for built in ctx.built.values():
            header.update(built.header)
        if any(row.ort_format for row in rows):
            header["export"]["ort"] = ort_conversion(s)
        report = _finish({**header, **report}, stage.folder, names)
        for row in rows:
            if row.file_name in report["files"]:
                report["files"][row.file_name].update(ctx.built[row.name].info)
        failed = [name for name in names if name not in passed and name not in errors] + list(errors)
        if errors:
            report.update(ok=False, reason=report["reason"] or next(iter(errors.values())))
        for name, why in errors.items():  # every format that could not be made (or finalised) says why
            report["files"].setdefault(name, {})["error"] = why
        report = stage.publish(passed, failed, report)
        if not report["ok"]:
            raise ParityError(_failure_line(report, passed), report)
    return report


def _build(ctx: ExportContext, row: ExportFormat) -> Built:
    """One format's file; a failure to make or measure it is that format's error, not the export's (fp32's
    is: every other file is checked against its measured inputs)."""
    try:
        return resolve_function(row.build)(ctx, row)
    except (ExportError, ModelError) as exc:
        if ctx.measured is None:  # fp32 itself
            raise
        return Built(error=f"{row.file_name}: {one_line(exc)}")


def _judge_and_finalize(
    ctx: ExportContext, rows: tuple[ExportFormat, ...], errors: dict[str, str], config: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Parity of every file made, then each passing file's final metadata (its format, its own accuracy),
    while the parity inputs are still open (an ORT file is converted again, and re-measured). Returns the
    check part of the report and the files that passed."""
    names = [row.file_name for row in rows if row.file_name not in errors]
    report = parity_report(ctx.measured, ctx.stage.folder, names, ctx.plan, config, limits=ctx.limits,
                           batch_size=ctx.batch_size)  # fmt: skip
    accuracy = report["test_accuracy"] or {}
    passed = []
    for row in rows:
        if row.file_name in names and file_passed(report, row.file_name):
            try:
                finalize(ctx, row, ctx.built[row.name], accuracy.get(row.name))
            except ExportError as exc:
                errors[row.file_name] = str(exc)
                continue
            passed.append(row.file_name)
    return report, passed


def _failure_line(report: dict[str, Any], passed: list[str]) -> str:
    """The one error line: the first failure, then what was published and what was kept."""
    reason = report["reason"]
    kept = [name for name, entry in report["files"].items() if entry.get("kept")]
    notes = [f"published {', '.join(passed)}"] if passed else []
    notes += [f"kept the earlier {', '.join(kept)}"] if kept else []
    return f"{reason} ({'; '.join(notes)})" if notes else reason


@locks_output("out", "export folder")
def check_export(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ExportSettings | None = None,
    *,
    peer: str | None = None,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Re-run parity on every format's file already in OUT against RUN's PyTorch peer.

    Of the settings, the parity ones apply (emulate, parity_images, batch_size, data, eval_data, seed).
    `peer` defaults to the one the file's metadata names. Rewrites OUT/parity.json; raises ParityError
    when a check fails.
    """
    s = build(ExportSettings, settings, options)
    out = Path(out)
    if not (out / FP32_NAME).is_file():
        raise UserError(f"{out}: no {FP32_NAME} to check; export first (coreg-edge export RUN --out {out})")
    trained = FinishedRun(run)
    config = trained.config
    names = [row.file_name for row in FORMATS if (out / row.file_name).is_file()]
    try:
        meta = get_metadata(out / FP32_NAME) or {}
    except ModelError:  # unreadable: parity below records why and fails
        meta = {}
    resolved = trained.resolve_peer(peer or meta.get("peer") or "selected")
    module = trained.network(resolved)
    previous = read_json_object(out / PARITY_NAME)
    plan = plan_images(
        config, run, parity_images=s.parity_images, seed=s.seed, calibrate=False, data=s.data,
        eval_data=s.eval_data,
    )  # fmt: skip
    header = {
        "run": str(Path(run).resolve()),
        "peer": resolved,
        "coreg_edge_version": __version__,
        "check_only": True,
        **{key: previous.get(key) for key in ("export", "calibration", "quantization")},
        "int8": None,
    }
    limits = Thresholds(min_images=s.parity_images)
    try:
        with tempfile.TemporaryDirectory(prefix="coreg-edge-check-") as tmp:
            measured = _measure_written(module, out, names, plan, header, Path(tmp), s, quiet)
        report = parity_report(measured, out, names, plan, config, limits=limits, batch_size=s.batch_size)
        if meta.get("peer") not in (None, resolved):  # --peer names another network than the files hold
            report["problems"].insert(0, f"the files were exported from peer {meta['peer']} (their metadata), "
                                         f"checked here against peer {resolved}; drop --peer to check them as made")  # fmt: skip
    except (ModelError, ExportError) as exc:  # a file that cannot be opened or run: the old report must go
        report = {"thresholds": limits.to_dict(), "checks": {}, "test_accuracy": None, "problems": [str(exc)]}
    report = _finish({**header, **report}, out, names)
    write_json(out / PARITY_NAME, report)
    if not report["ok"]:
        raise ParityError(report["reason"], report)
    return report


def _measure_written(
    module: Any, out: Path, names: list[str], plan: ImagePlan, header: dict[str, Any], tmp: Path,
    s: ExportSettings, quiet: bool,
) -> Logits:  # fmt: skip
    """Logits of the files already in OUT, each where its row says (an int8 file on the kernels of the
    target its metadata names; header["int8"] says which)."""
    fp32 = open_classifier(out / FP32_NAME, s.batch_size)
    keep = tmp / "inputs.npy" if len(names) > 1 else None
    measured = collect_logits(
        module, {FP32_NAME: fp32}, plan.parity, batch_size=s.batch_size, quiet=quiet, keep_inputs=keep
    )
    try:
        for name in names[1:]:
            row = _row(name)
            open_classifier(out / name, s.batch_size)  # an unreadable file: ModelError, as on the device
            route = None
            if row.measure == "int8-route":
                route = int8_route(out / name, emulate=s.emulate)
                header["int8"] = {"target": resolve_target(route.target).to_dict(), **route.to_dict()}
            measured.onnx[name] = measure_file(row, out / name, measured.inputs, s.batch_size, route)
    finally:
        measured.inputs = None  # the memory map closes before its folder goes
    return measured


def int8_route(path: Path, *, emulate: bool = True) -> Route:
    """How to check an int8 file already written: on the kernels of the target its metadata names."""
    try:
        recorded = (get_metadata(path) or {}).get("quantization") or {}
    except ModelError:
        recorded = {}
    name = recorded.get("target") if isinstance(recorded, dict) else None
    return choose_route(resolve_target(name if name in TARGETS else AUTO), emulate=emulate)
