"""Co-Reg's epoch as the method registry calls it (methods.py's "coreg" row): warm-up epochs, then both
divisions and each network trained on its partner's (docs/ALGORITHM.md); the epoch functions are in
coreg.py."""

from __future__ import annotations

import warnings
from typing import Any

from coreg_edge.algorithm import detect_collapse
from coreg_edge.training.coreg import coreg_epoch, divide_items, warmup_epoch
from coreg_edge.training.methods import EpochInputs


def warn_collapse(epoch: int, collapse: dict[str, dict[str, Any]]) -> None:
    """One warning line for the epoch, however many peers collapsed."""
    collapsed = {k: verdict for k, verdict in collapse.items() if verdict["collapsed"]}
    if not collapsed:
        return
    shares = " / ".join(f"{verdict['largest_class_share']:.0%}" for verdict in collapsed.values())
    who = f"peer {next(iter(collapsed))} predicts" if len(collapsed) == 1 else "peers a and b predict"
    warnings.warn(
        f"epoch {epoch}: {who} one class for {shares} of items (collapse); consider a longer --warmup",
        stacklevel=4,
    )


def coreg_phase(inputs: EpochInputs) -> dict[str, Any]:
    """A warm-up epoch of both networks, or a Co-Reg epoch: both divisions first, then each network on
    its partner's division. Returns the metrics record's `phase`, `loss` (and `collapse`)."""
    ctx, peers, config, epoch, rows = (
        inputs.ctx,
        inputs.peers,
        inputs.settings.coreg,
        inputs.epoch,
        inputs.train_rows,
    )
    if inputs.schedule.is_warmup(epoch):
        return {"phase": "warmup", "loss": {p.name: warmup_epoch(ctx, p, epoch, config, rows) for p in peers}}
    divisions = {p.name: divide_items(ctx, p, config, rows, inputs.prior) for p in peers}
    a, b = peers
    loss = {
        "a": coreg_epoch(ctx, a, b, divisions["b"], epoch, config, inputs.schedule, inputs.bank, rows),
        "b": coreg_epoch(ctx, b, a, divisions["a"], epoch, config, inputs.schedule, inputs.bank, rows),
    }
    on_device = rows.to(ctx.device)
    collapse = {k: detect_collapse(d.predictions[on_device], ctx.num_classes) for k, d in divisions.items()}
    warn_collapse(epoch + 1, collapse)  # counted from 1, as the epoch lines count
    return {"phase": "coreg", "loss": loss, "collapse": collapse}
