"""`export_run` and `check_export`: the library functions behind `coreg-edge export` (same arguments).

export_run: run folder -> staged fp32 ONNX (+ metadata) -> [pre-process, calibrate, quantize to int8 QDQ]
-> parity on real images -> publish model.onnx (+ model.int8.onnx) and parity.json, or reject them all.
check_export: parity again on the files already in DIR (`--check-only`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from coreg_edge import __version__
from coreg_edge.errors import UserError
from coreg_edge.exporters.errors import ParityError
from coreg_edge.exporters.images import ImagePlan, plan_images
from coreg_edge.exporters.metadata import get_metadata, set_metadata
from coreg_edge.exporters.onnx_export import check_onnx, load_peer_module, resolve_peer, to_onnx
from coreg_edge.exporters.parity import Thresholds, collect_logits, evaluate, first_failure
from coreg_edge.exporters.quantize import QuantSettings
from coreg_edge.exporters.staging import FP32_NAME, INT8_NAME, PARITY_NAME, Staging
from coreg_edge.runtime.classifier import Classifier
from coreg_edge.runtime.metadata import ModelError, make_metadata
from coreg_edge.runtime.session import load_model
from coreg_edge.training.run_folder import preprocess_config, read_config, write_json

KINDS = {FP32_NAME: "fp32", INT8_NAME: "int8"}


def open_classifier(path: Path, batch_size: int) -> Classifier:
    """The device's Classifier, with idle onnxruntime threads not spinning: parity alternates PyTorch and
    onnxruntime batch by batch, and spinning workers of one would steal the cores of the other."""
    return Classifier.from_loaded(load_model(path, spinning=False), batch_size=batch_size)


def _check_sizes(batch_size: int, parity_images: int) -> None:
    if batch_size < 2:
        raise UserError(
            f"--batch-size must be >= 2: parity runs batched, as a device does (got {batch_size})"
        )
    if parity_images < 1:
        raise UserError(f"--parity-images must be >= 1 (got {parity_images})")


def run_parity(
    module: Any,
    folder: Path,
    names: list[str],
    plan: ImagePlan,
    config: dict[str, Any],
    *,
    limits: Thresholds,
    batch_size: int,
    quiet: bool,
) -> dict[str, Any]:
    """Measure every file in `names` (inside `folder`) against PyTorch; the report's check part."""
    classifiers = {name: open_classifier(folder / name, batch_size) for name in names}
    problems = []
    for name, classifier in classifiers.items():
        if list(classifier.class_names) != list(config["class_names"]):
            problems.append(f"{name}: its class names differ from the run's")
    configs = {classifier.config for classifier in classifiers.values()}
    if len(configs) > 1:
        problems.append("the files' metadata describe different preprocessing")
    measured = collect_logits(module, classifiers, plan.parity, batch_size=batch_size, quiet=quiet)
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


def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    int8: bool = False,
    peer: str = "selected",
    opset: int | None = None,
    calibration_images: int = 256,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    per_channel: bool = True,
    calibration_method: str = "minmax",
    parity_images: int = 256,
    batch_size: int = 32,
    dynamo: bool = False,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Export RUN's peer to OUT/model.onnx (and OUT/model.int8.onnx), check parity, return the report.

    Raises ParityError (after writing parity.json with ok=false) when a check fails; nothing is then left
    under a model's final name.
    """
    from coreg_edge.exporters.calibration import ImageCalibrationReader
    from coreg_edge.exporters.quantize import pre_process, quantize

    _check_sizes(batch_size, parity_images)
    config = read_config(run)
    resolved = resolve_peer(run, peer)
    settings = QuantSettings(activation_type, weight_type, per_channel, calibration_method) if int8 else None
    module = load_peer_module(run, resolved)
    transform = preprocess_config(run)
    plan = plan_images(
        config,
        run,
        calibration_images=calibration_images,
        parity_images=parity_images,
        seed=seed,
        calibrate=int8,
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
    )
    with Staging(out) as stage:
        names = [FP32_NAME]
        used_opset = to_onnx(module, stage.path(FP32_NAME), transform.shape, opset=opset, dynamo=dynamo)
        set_metadata(stage.path(FP32_NAME), meta)
        calibration = None
        if settings is not None and plan.calibration is not None:
            reader = ImageCalibrationReader(
                open_classifier(stage.path(FP32_NAME), batch_size), plan.calibration, batch_size, quiet
            )
            pre_process(stage.path(FP32_NAME), stage.path("model.pre.onnx"))
            quantize(stage.path("model.pre.onnx"), stage.path(INT8_NAME), reader, settings)
            set_metadata(stage.path(INT8_NAME), meta)
            check_onnx(stage.path(INT8_NAME))
            names.append(INT8_NAME)
            calibration = {
                **plan.calibration.describe(),
                "used": reader.count,
                "skipped": reader.skipped,
                "disjoint_from_parity": plan.disjoint,
            }
        report = run_parity(
            module, stage.folder, names, plan, config, limits=limits, batch_size=batch_size, quiet=quiet
        )
        header = {
            "run": str(run),
            "peer": resolved,
            "coreg_edge_version": __version__,
            "export": {
                "exporter": "torch.onnx dynamo" if dynamo else "torch.onnx TorchScript",
                "opset": used_opset,
            },
            "calibration": calibration,
            "quantization": settings.to_dict() if settings else None,
        }
        accuracy = report["test_accuracy"] or {}
        if first_failure(report) is None:
            for name in names:  # the device sees each file's own measured test accuracy
                set_metadata(stage.path(name), {**meta, "test_accuracy": accuracy.get(KINDS[name])})
        report = _finish({**header, **report}, stage.folder, names)
        if not report["ok"]:
            stage.reject(names, report)
            raise ParityError(report["reason"], report)
        stage.publish(names, report)
    return report


def _previous_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def check_export(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    peer: str | None = None,
    parity_images: int = 256,
    batch_size: int = 32,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Re-run parity on OUT/model.onnx (and OUT/model.int8.onnx when present) against RUN's PyTorch peer.

    `peer` defaults to the one the file's metadata names. Rewrites OUT/parity.json; raises ParityError
    when a check fails.
    """
    _check_sizes(batch_size, parity_images)
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
    previous = _previous_report(out / PARITY_NAME)
    plan = plan_images(config, run, parity_images=parity_images, seed=seed, calibrate=False)
    header = {
        "run": str(run),
        "peer": resolved,
        "coreg_edge_version": __version__,
        "check_only": True,
        **{key: previous.get(key) for key in ("export", "calibration", "quantization")},
    }
    limits = Thresholds(min_images=parity_images)
    try:
        report = run_parity(
            module, out, names, plan, config, limits=limits, batch_size=batch_size, quiet=quiet
        )
    except ModelError as exc:  # a file the runtime cannot even open: its old parity.json must not stand
        report = {"thresholds": limits.to_dict(), "checks": {}, "test_accuracy": None, "problems": [str(exc)]}
    report = _finish({**header, **report}, out, names)
    write_json(out / PARITY_NAME, report)
    if not report["ok"]:
        raise ParityError(report["reason"], report)
    return report
