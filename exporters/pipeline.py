"""`export_run` and `check_export`: the library functions behind `coreg-edge export` (same arguments).

export_run: run folder -> staged fp32 ONNX (+ metadata) -> [pre-process, calibrate, quantize to int8 QDQ]
-> parity on real images -> publish each file that passed, keep each that failed as NAME.rejected (an earlier
good file under NAME stays), parity.json last.
check_export: parity again on the files already in DIR (`--check-only`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from coreg_edge import __version__
from coreg_edge.errors import UserError
from coreg_edge.exporters.errors import ExportError, ParityError
from coreg_edge.exporters.images import ImagePlan, plan_images
from coreg_edge.exporters.int8 import Int8Outcome, Route, route_outputs
from coreg_edge.exporters.metadata import get_metadata, set_metadata
from coreg_edge.exporters.onnx_export import check_onnx, load_peer_module, resolve_peer, to_onnx
from coreg_edge.exporters.parity import Logits, Thresholds, collect_logits, evaluate, first_failure
from coreg_edge.exporters.quantize import QuantSettings
from coreg_edge.exporters.staging import FP32_NAME, INT8_NAME, PARITY_NAME, Staging
from coreg_edge.exporters.targets import AUTO, TARGETS, Int8Target, apply_overrides, resolve_target
from coreg_edge.locks import locks_output
from coreg_edge.runtime.classifier import Classifier
from coreg_edge.runtime.metadata import ModelError, make_metadata
from coreg_edge.runtime.session import load_model
from coreg_edge.settings.export import ExportSettings
from coreg_edge.settings.fields import build
from coreg_edge.training.run_folder import preprocess_config, read_config
from coreg_edge.utils import read_json_object, write_json

KINDS = {FP32_NAME: "fp32", INT8_NAME: "int8"}


def open_classifier(path: Path, batch_size: int) -> Classifier:
    """The device's Classifier, with idle onnxruntime threads not spinning: parity alternates PyTorch and
    onnxruntime batch by batch, and spinning workers of one would steal the cores of the other."""
    return Classifier.from_loaded(load_model(path, spinning=False), batch_size=batch_size)


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
    checks, test_accuracy = evaluate(measured, {name: KINDS[name] for name in names}, limits)
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
    files = {name: {"bytes": (folder / name).stat().st_size} for name in names}
    if FP32_NAME in files and INT8_NAME in files:
        files[INT8_NAME]["vs_fp32"] = round(files[INT8_NAME]["bytes"] / files[FP32_NAME]["bytes"], 4)
    return {"ok": reason is None, "reason": reason, **report, "files": files}


def quantization_metadata(target: Int8Target, settings: QuantSettings, route: Route) -> dict[str, Any]:
    """What the int8 file says about itself: the CPU family it was made for and how it was checked."""
    return {
        "target": target.name,
        "settings": settings.describe(),
        "checked_with": route.kernels,
        "faithful": route.faithful,
    }


def _int8(
    stage: Staging,
    fp32: Classifier,
    measured: Logits,
    plan: ImagePlan,
    chosen: Int8Target,
    settings: QuantSettings,
    meta: dict[str, Any],
    *,
    recover: bool,
    emulate: bool,
    limits: Thresholds,
    batch_size: int,
    quiet: bool,
) -> tuple[Int8Outcome, dict[str, Any]]:
    """Calibrate once, then quantize for `chosen` (with recovery) into the staging folder."""
    from coreg_edge.exporters.calibration import ArrayCalibrationReader, preprocess_calibration
    from coreg_edge.exporters.int8 import choose_route, quantize_for_target
    from coreg_edge.exporters.quantize import pre_process

    store = stage.path("calibration-inputs.npy")
    images = preprocess_calibration(fp32, plan.calibration, store, batch_size, quiet)
    used_count = images.count
    route = choose_route(chosen, emulate=emulate)

    def reader(used: QuantSettings) -> ArrayCalibrationReader:
        single = used.calibration_method != "minmax"
        return ArrayCalibrationReader(images.array, fp32.loaded.input_name, batch_size, single)

    def finish(path: Path, used: QuantSettings) -> None:
        set_metadata(path, {**meta, "quantization": quantization_metadata(chosen, used, route)})
        check_onnx(path)

    pre_process(stage.path(FP32_NAME), stage.path("model.pre.onnx"))
    try:
        outcome = quantize_for_target(
            stage.path("model.pre.onnx"),
            stage.folder,
            settings=settings,
            route=route,
            reference=measured.reference,
            inputs=measured.inputs,
            labels=measured.check_labels,
            limits=limits,
            reader=reader,
            finish=finish,
            recover=recover,
            log=(lambda _: None) if quiet else (lambda line: print(line, file=sys.stderr)),
        )
    finally:
        images.array = None  # close the memory map before the staging folder goes
    calibration = {
        **plan.calibration.describe(),
        "used": used_count,
        "skipped": images.skipped,
        "disjoint_from_parity": plan.disjoint,
    }
    return outcome, calibration


@locks_output("out", "export folder")
def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ExportSettings | None = None,
    *,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Export RUN's peer to OUT/model.onnx (and OUT/model.int8.onnx), check parity, return the report.

    `settings` (an ExportSettings) and/or its fields as keywords (keywords win).
    int8: `target` (targets.py; auto = this CPU) gives the settings, the explicit options override them;
    when they fail parity, the recovery attempts follow unless `recover` is false. `emulate`: check a
    target this CPU cannot run on an emulator when one is installed (emulation.py).
    Raises ParityError (after writing parity.json with ok=false) when a check fails: the files that passed
    are published all the same, a failed one is left as NAME.rejected, and an earlier export's file under
    its name is kept.
    """
    s = build(ExportSettings, settings, options)
    int8, seed, batch_size, parity_images = s.int8, s.seed, s.batch_size, s.parity_images
    config = read_config(run)
    resolved = resolve_peer(run, s.peer)
    chosen = resolve_target(s.target)
    settings = apply_overrides(chosen.settings, **s.quantization_overrides()) if int8 else None
    module = load_peer_module(run, resolved)
    transform = preprocess_config(run)
    plan = plan_images(
        config,
        run,
        calibration_images=s.calibration_images,
        parity_images=parity_images,
        seed=seed,
        calibrate=int8,
        data=s.data,
        eval_data=s.eval_data,
    )
    limits = Thresholds(min_images=parity_images)
    meta = make_metadata(
        config["class_names"],
        transform,
        backbone=config["network"]["backbone"],
        method=config.get("method"),
        peer=resolved,
        annotator=config.get("annotator"),
        test_accuracy=None,
        reject_threshold=_reject_threshold(run, resolved),
    )
    with Staging(out) as stage:
        names = [FP32_NAME]
        used_opset = to_onnx(module, stage.path(FP32_NAME), transform.shape, opset=s.opset, dynamo=s.dynamo)
        set_metadata(stage.path(FP32_NAME), meta)
        fp32 = open_classifier(stage.path(FP32_NAME), batch_size)
        keep = stage.path("parity-inputs.npy") if settings is not None else None
        measured = collect_logits(
            module, {FP32_NAME: fp32}, plan.parity, batch_size=batch_size, quiet=quiet, keep_inputs=keep
        )
        calibration = outcome = int8_error = None
        try:
            if settings is not None and plan.calibration is not None:
                outcome, calibration = _int8(
                    stage, fp32, measured, plan, chosen, settings, meta, recover=s.recover, emulate=s.emulate,
                    limits=limits, batch_size=batch_size, quiet=quiet,
                )  # fmt: skip
                measured.onnx[INT8_NAME] = outcome.logits
                names.append(INT8_NAME)
        except ExportError as exc:  # int8 could not be made at all: fp32 still stands on its own checks
            int8_error = str(exc)
        finally:
            measured.inputs = None  # the memory map closes before the staging folder goes
        report = parity_report(
            measured, stage.folder, names, plan, config, limits=limits, batch_size=batch_size
        )
        shipped = outcome.settings if outcome is not None else None
        header = {
            "run": str(run),
            "peer": resolved,
            "coreg_edge_version": __version__,
            "export": {
                "exporter": "torch.onnx dynamo" if s.dynamo else "torch.onnx TorchScript",
                "opset": used_opset,
            },
            "calibration": calibration,
            "quantization": None if shipped is None else {**shipped.to_dict(), "target": chosen.name},
            "int8": None if outcome is None else {"target": chosen.to_dict(), **outcome.to_dict()},
        }
        accuracy = report["test_accuracy"] or {}
        passed = [name for name in names if _file_passed(report, name)]
        for name in passed:  # the device sees each file's own measured test accuracy
            extra = {}
            if name == INT8_NAME and outcome is not None:
                extra["quantization"] = quantization_metadata(chosen, shipped, outcome.route)
            set_metadata(stage.path(name), {**meta, **extra, "test_accuracy": accuracy.get(KINDS[name])})
        if int8_error is not None:
            header["int8"] = {"target": chosen.to_dict(), "error": int8_error}
        report = _finish({**header, **report}, stage.folder, names)
        failed = [name for name in names if name not in passed]
        if int8_error is not None:
            report.update(ok=False, reason=report["reason"] or int8_error)
            failed.append(INT8_NAME)
        report = stage.publish(passed, failed, report)
        if not report["ok"]:
            raise ParityError(_failure_line(report, passed), report)
    return report


def _reject_threshold(run: str | os.PathLike[str], peer: str) -> float | None:
    """The run's calibrated "none of these" threshold for this network (selection.json), or None."""
    from coreg_edge.training.run_folder import read_selection

    thresholds = read_selection(run).get("reject_threshold") or {}
    value = thresholds.get(peer)
    return float(value) if isinstance(value, (int, float)) else None


def _file_passed(report: dict[str, Any], name: str) -> bool:
    """A file is published when every one of its checks passed and nothing is wrong with the export."""
    checks = (report.get("checks") or {}).get(name) or {}
    return bool(checks) and not report.get("problems") and all(c["ok"] for c in checks.values())


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
    """Re-run parity on OUT/model.onnx (and OUT/model.int8.onnx when present) against RUN's PyTorch peer.

    Of the settings, the parity ones apply (emulate, parity_images, batch_size, data, eval_data, seed).
    `peer` defaults to the one the file's metadata names. Rewrites OUT/parity.json; raises ParityError
    when a check fails.
    """
    s = build(ExportSettings, settings, options)
    emulate, parity_images, batch_size, seed = s.emulate, s.parity_images, s.batch_size, s.seed
    data, eval_data = s.data, s.eval_data
    out = Path(out)
    if not (out / FP32_NAME).is_file():
        raise UserError(f"{out}: no {FP32_NAME} to check; export first (coreg-edge export RUN --out {out})")
    config = read_config(run)
    names = [name for name in (FP32_NAME, INT8_NAME) if (out / name).is_file()]
    try:
        meta = get_metadata(out / FP32_NAME) or {}
    except ModelError:  # unreadable: parity below records why and fails
        meta = {}
    resolved = resolve_peer(run, peer or meta.get("peer") or "selected")
    module = load_peer_module(run, resolved)
    previous = read_json_object(out / PARITY_NAME)
    plan = plan_images(
        config, run, parity_images=parity_images, seed=seed, calibrate=False, data=data, eval_data=eval_data
    )
    header = {
        "run": str(run),
        "peer": resolved,
        "coreg_edge_version": __version__,
        "check_only": True,
        **{key: previous.get(key) for key in ("export", "calibration", "quantization")},
        "int8": None,
    }
    limits = Thresholds(min_images=parity_images)
    try:
        with tempfile.TemporaryDirectory(prefix="coreg-edge-check-") as tmp:
            measured = _measure_written(
                module, out, names, plan, header, Path(tmp), batch_size, emulate, quiet
            )
        report = parity_report(measured, out, names, plan, config, limits=limits, batch_size=batch_size)
    except (ModelError, ExportError) as exc:  # a file that cannot be opened or run: the old report must go
        report = {"thresholds": limits.to_dict(), "checks": {}, "test_accuracy": None, "problems": [str(exc)]}
    report = _finish({**header, **report}, out, names)
    write_json(out / PARITY_NAME, report)
    if not report["ok"]:
        raise ParityError(report["reason"], report)
    return report


def _measure_written(
    module: Any,
    out: Path,
    names: list[str],
    plan: ImagePlan,
    header: dict[str, Any],
    tmp: Path,
    batch_size: int,
    emulate: bool,
    quiet: bool,
) -> Logits:
    """Logits of the files already in OUT: fp32 here, int8 on its target's kernels (header["int8"] says
    which)."""
    fp32 = open_classifier(out / FP32_NAME, batch_size)
    keep = tmp / "inputs.npy" if INT8_NAME in names else None
    measured = collect_logits(
        module, {FP32_NAME: fp32}, plan.parity, batch_size=batch_size, quiet=quiet, keep_inputs=keep
    )
    try:
        if INT8_NAME in names:
            open_classifier(out / INT8_NAME, batch_size)  # an unreadable file: ModelError, as on the device
            route = int8_route(out / INT8_NAME, emulate=emulate)
            header["int8"] = {"target": resolve_target(route.target).to_dict(), **route.to_dict()}
            logits = route_outputs(route, out / INT8_NAME, measured.inputs, ["logits"])["logits"]
            measured.onnx[INT8_NAME] = logits
    finally:
        measured.inputs = None  # the memory map closes before its folder goes
    return measured


def int8_route(path: Path, *, emulate: bool = True) -> Route:
    """How to check an int8 file already written: on the kernels of the target its metadata names."""
    from coreg_edge.exporters.int8 import choose_route

    try:
        recorded = (get_metadata(path) or {}).get("quantization") or {}
    except ModelError:
        recorded = {}
    name = recorded.get("target") if isinstance(recorded, dict) else None
    return choose_route(resolve_target(name if name in TARGETS else AUTO), emulate=emulate)
