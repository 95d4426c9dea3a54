"""The copies of the network an int8 attempt may quantize instead of the network itself, one row each
(PREPARED; targets.SOURCES names them, QuantSettings.source picks one): bias-corrected (bias_correction.py)
and fine-tuned under the target's rounding (qat.py). Each is exported and pre-processed like model.onnx;
parity still judges its int8 file against the network as trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coreg_edge.errors import UserError
from coreg_edge.exporters import bias_correction, qat
from coreg_edge.exporters import calibration as calibration_step
from coreg_edge.exporters.errors import ExportError
from coreg_edge.exporters.onnx_export import to_onnx
from coreg_edge.exporters.quantize import QuantSettings, pre_process
from coreg_edge.training.methods import get_method
from coreg_edge.utils import progress, resolve_device

if TYPE_CHECKING:  # pragma: no cover
    from coreg_edge.exporters.builders import ExportContext


def prepare_source(ctx: ExportContext, calibration: np.ndarray, settings: QuantSettings) -> tuple[Path, dict[str, Any]]:
    """The copy of the peer an attempt quantizes (settings.source: a row of PREPARED), exported and
    pre-processed like model.onnx; with the record of what was done."""
    network, record = PREPARED[settings.source](ctx, calibration, settings)
    stem = settings.source.replace("-", "_")
    onnx_file, pre_file = ctx.stage.path(f"model.{stem}.onnx"), ctx.stage.path(f"model.{stem}.pre.onnx")
    to_onnx(network, onnx_file, ctx.input_shape, opset=ctx.opset, dynamo=ctx.settings.dynamo)
    pre_process(onnx_file, pre_file)
    return pre_file, record


def bias_corrected(ctx: ExportContext, calibration: np.ndarray, settings: QuantSettings) -> tuple[Any, dict[str, Any]]:
    """bias_correction.py on the calibration images."""
    return bias_correction.correct_bias(ctx.module, calibration, settings, batch_size=ctx.batch_size)


def fine_tuned(ctx: ExportContext, calibration: np.ndarray, settings: QuantSettings) -> tuple[Any, dict[str, Any]]:
    """qat.py: the fine-tuning images preprocessed by the runtime, a copy of the peer fine-tuned under
    `settings`' rounding within the budget."""
    subset = ctx.plan.fine_tune
    if subset is None:
        raise ExportError("no training images to fine-tune on")
    s = ctx.settings
    store = ctx.stage.path("qat-inputs.npy")
    images = calibration_step.preprocess_calibration(ctx.fp32, subset, store, ctx.batch_size, ctx.quiet, desc="qat images")
    try:
        passes = training_image_passes(ctx.run_config, len(subset.source))
        epochs = qat.epochs_within_budget(s.qat_epochs, images.count, passes)
        with progress(None, desc="qat", total=epochs * images.count, quiet=ctx.quiet, unit="img") as bar:
            tuned = qat.fine_tune(
                ctx.module, images.array, calibration, settings, epochs=epochs,
                batch_size=ctx.batch_size, seed=s.seed, device=resolve_device(s.device), step=bar.update,
            )  # fmt: skip
    finally:
        images.array = None  # close the memory map before the file goes
        store.unlink(missing_ok=True)
    tuned.record.update(asked_epochs=s.qat_epochs, budget_share=qat.BUDGET_SHARE, training_image_passes=passes)
    return tuned.network, tuned.record


def training_image_passes(config: dict[str, Any], items: int) -> int | None:
    """What the training cost in image passes: epochs x the training data's items x the method's peers
    (Co-Reg trains two networks, the baselines one); None when the run's config does not say."""
    epochs = (config.get("settings") or {}).get("epochs")
    if not epochs:
        return None
    try:
        peers = len(get_method(config.get("method") or "coreg").peers)
    except (KeyError, ValueError, UserError):  # a method this install does not know: count two networks
        peers = 2
    return int(epochs) * items * peers


#: How each source other than the trained network is made (targets.SOURCES names them).
PREPARED = {"bias-corrected": bias_corrected, "fine-tuned": fine_tuned}
