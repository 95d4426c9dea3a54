"""`train()`: an annotation file -> a run folder with both peers, metrics, and the selected peer.

The trainer wires the pure algorithm (coreg_edge.algorithm) to cached data, devices, AMP, torch.compile and
checkpoints. Every epoch ends with a checkpoint, so an interrupted run (Ctrl-C, a crash, a NaN) resumes
exactly with `resume=True`.

This module only orchestrates; each job is a module of its own:
  resume.py     the run folder's lifecycle and resume policy (new-folder rule, config.json, divergence advice)
  assembly.py   data, split, views, automatic choices, the label-free rules' state (networks.py: the peers)
  loop.py       the epoch loop
  hooks.py      the epoch-end and train-end hooks (warm-up end, best-epoch guard, metrics log, reject thresholds)
  scores.py     evaluation (held-out scores, test / val accuracy, the ensemble, reject thresholds)
  selection.py  keeping the best weights, picking a peer, selection.json
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.locks import exclusive
from coreg_edge.logs import quieted
from coreg_edge.settings.fields import build
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training import distributed
from coreg_edge.training.assembly import CUTOUT_DATASETS, PROBE_ITEMS, Run, prepare
from coreg_edge.training.assembly import dataset_views as _dataset_views
from coreg_edge.training.checkpoint import save_checkpoint
from coreg_edge.training.hooks import add_hook, default_hooks
from coreg_edge.training.loop import Interrupted, fit
from coreg_edge.training.loop import lost_a_process as _lost_a_process
from coreg_edge.training.networks import amp_dtype as _amp_dtype
from coreg_edge.training.networks import build_peer as _build_peer
from coreg_edge.training.resume import check_before_launch, resume_settings, settings_for_call, start_run
from coreg_edge.training.scores import REJECT_ACCEPTS, ensemble_logits
from coreg_edge.training.selection import finish

__all__ = [
    "CUTOUT_DATASETS", "PROBE_ITEMS", "REJECT_ACCEPTS", "Interrupted", "add_hook", "check_before_launch",
    "default_hooks", "ensemble_logits", "resume_settings", "save_checkpoint", "train",
    "_amp_dtype", "_build_peer", "_dataset_views", "_lost_a_process",
]  # fmt: skip


def train(
    annotation: str | Path | None,
    out: str | Path,
    settings: TrainSettings | None = None,
    *,
    resume: bool = False,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Train `settings.method` (Co-Reg by default) on an annotation file into the run folder `out`.

    `settings` (a TrainSettings) and/or its fields as keywords (keywords win). With `resume`, the run's
    stored settings are used, except the RESUME_OVERRIDES given here as keywords. Under torchrun every rank
    calls this; rank 0 alone locks and writes `out` (training/distributed.py).
    Returns the selection summary (also written to out/selection.json).
    """
    out = Path(out)
    if resume and settings is not None:
        raise UserError("resume=True continues the stored settings: pass only where it runs, as keywords")
    with distributed.joined() as group, contextlib.ExitStack() as held, quieted(quiet):
        def checks() -> tuple[TrainSettings, dict[str, Any] | None, str | Path, float | None]:
            held.enter_context(exclusive(out, "run folder"))
            call = settings if resume else build(TrainSettings, settings, options)
            return settings_for_call(out, annotation, resume, call, options)

        chosen, config, annotation, new_lr = group.decide(checks)
        run = prepare(chosen, annotation, config, group)
        if config is not None:
            run.chosen = config.get("chosen", {})  # what the run chose when it started (stored resolved since)
        start = start_run(out, run, run.settings, config, annotation, new_lr)
        _fit(out, run, run.settings, start)
        return _finish(out, run, run.settings)


def _fit(out: Path, run: Run, settings: TrainSettings, start: int) -> None:
    """The epochs (loop.py), checkpointed through this module's `save_checkpoint`."""
    fit(out, run, settings, start, save=save_checkpoint)


def _finish(out: Path, run: Run, settings: TrainSettings) -> dict:
    """Keep the best weights, save both peers, pick one, write selection.json (selection.py)."""
    return finish(out, run, settings)
