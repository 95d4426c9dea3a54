"""Epoch-end and train-end hooks: the label-free rules run after each epoch, registered by event like
ultralytics' callbacks. A run holds `{event: [hook, ...]}` (default_hooks); the loop and the selection call
`run_hooks(run, event, args)`, which calls each hook in order with one HookArgs.

Events: "on_fit_epoch_end" (after the epoch's evaluation: warm-up end, best-epoch guard; they fill the epoch's
record and events), "on_model_save" (just before the epoch's checkpoint: the metrics log), "on_train_end"
(before selection.json is written: reject thresholds, into `args.results`). Also here: the state of the
rules that a checkpoint carries (checkpoint_extra / restore_extra) and a rollback to a peer's best weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coreg_edge.settings.train import TrainSettings
from coreg_edge.training import auto
from coreg_edge.training import run_folder as rf
from coreg_edge.training.context import Peer
from coreg_edge.training.guard import BestEpochGuard
from coreg_edge.training.scores import reject_thresholds as calibrate_reject
from coreg_edge.utils import json_safe

if TYPE_CHECKING:
    from coreg_edge.training.assembly import Run

Hook = Callable[["HookArgs"], None]


@dataclass
class HookArgs:
    """What a hook sees: the run folder and state, and for epoch events the epoch, its metrics record and the
    lines it prints (`events`); train-end hooks put what selection.json records into `results`."""

    out: Path
    run: Run
    settings: TrainSettings
    epoch: int = -1
    record: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


def default_hooks() -> dict[str, list[Hook]]:
    """Every run's hooks, a fresh list per event (in the order they run)."""
    return {
        "on_fit_epoch_end": [warmup_end, best_epoch_guard],
        "on_model_save": [metrics_log],
        "on_train_end": [reject_thresholds],
    }


def add_hook(run: Run, event: str, hook: Hook) -> None:
    """Register one more hook for `event` (after the default ones)."""
    run.hooks.setdefault(event, []).append(hook)


def run_hooks(run: Run, event: str, args: HookArgs) -> None:
    for hook in run.hooks.get(event, []):
        hook(args)


def _peer_scores(record: dict[str, Any], peers: list[Peer]) -> dict[str, dict[str, float]]:
    return {p.name: record["holdout"][p.name] for p in peers}


def warmup_end(args: HookArgs) -> None:
    """An automatic warm-up ends when the mean held-out hit rate flattens (auto.WarmupEnd): the schedule
    follows, the guard acts from then on, and config.json records it."""
    run, settings, epoch, record = args.run, args.settings, args.epoch, args.record
    end = run.warmup_end
    if end is None or end.ended is not None or not run.schedule.is_warmup(epoch):
        return
    scores = _peer_scores(record, run.peers)
    mean_hit = sum(v["hit_rate"] for v in scores.values()) / len(scores)
    if end.observe(epoch, mean_hit):
        run.warmup = end.ended
        run.schedule = settings.coreg.resolve(settings.epochs, end.ended)
        record["warmup_ended"] = {"epochs": end.ended, "why": end.why}
        if run.guard is not None:  # a fall during the warm-up is the network still learning
            run.guard.act_from = end.ended
        args.events.append(f"warm-up ends after {end.ended} epochs: {end.why}")
        if run.group.is_main:
            _update_config(args.out, {"schedule": run.schedule.describe(), "warmup_ended": record["warmup_ended"]})


def best_epoch_guard(args: HookArgs) -> None:
    """Keep each peer's new best weights; roll back (lower lr) or stop when the held-out score falls sharply
    (guard.py). Nothing with --no-keep-best."""
    run, epoch, record, events = args.run, args.epoch, args.record, args.events
    if run.guard is None:
        return
    scores = _peer_scores(record, run.peers)
    run.weights_epoch = {p.name: epoch for p in run.peers}
    decision = run.guard.observe(epoch, scores)
    for name in decision.improved:
        peer = next(p for p in run.peers if p.name == name)
        run.best_weights[name] = {k: v.detach().cpu().clone() for k, v in peer.net.state_dict().items()}
    if decision.action != "continue":
        record["guard"] = {"action": decision.action, "why": decision.why, "lr_scale": run.guard.lr_scale}
    if decision.action == "rollback":
        for peer in run.peers:
            if peer.name in decision.peers:
                restore_best(run, peer)
                peer.optimizer.state.clear()  # momentum of the failing steps would push the same way again
        who = f"peer {decision.peers[0]} goes back to its best epoch"
        if len(decision.peers) > 1:
            who = f"peers {' and '.join(decision.peers)} go back to their best epochs"
        events.append(f"epoch {epoch + 1}: {decision.why}; {who} and the learning rate is scaled by {run.guard.lr_scale:g}")
    elif decision.action == "stop":
        events.append(f"epoch {epoch + 1}: {decision.why} again; training stops and keeps the best epochs")


def metrics_log(args: HookArgs) -> None:
    """The epoch's line in metrics.jsonl (rank 0), written before the checkpoint: a crash between them leaves
    an extra line that resume truncates."""
    if args.run.group.is_main:
        with open(args.out / rf.METRICS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(json_safe(args.record), allow_nan=False) + "\n")


def reject_thresholds(args: HookArgs) -> None:
    """selection.json's reject_threshold: calibrated on the held-out items (every rank takes part)."""
    run = args.run
    args.results["reject_threshold"] = calibrate_reject(run.ctx, run.peers, run.holdout_rows)


def restore_best(run: Run, peer: Peer) -> None:
    """Load a peer's best epoch's weights (kept by the guard), if any."""
    state = run.best_weights.get(peer.name)
    if state is not None:
        peer.net.load_state_dict(state)
        run.weights_epoch[peer.name] = run.guard.best[peer.name].epoch


def checkpoint_extra(run: Run) -> dict[str, Any]:
    """What the checkpoint needs beyond the training state: the label-free decisions and the best weights."""
    return {
        "warmup_end": run.warmup_end.state_dict() if run.warmup_end else None,
        "guard": run.guard.state_dict() if run.guard else None,
        "best_weights": run.best_weights,
        "weights_epoch": run.weights_epoch,
    }


def restore_extra(run: Run, extra: dict[str, Any], settings: TrainSettings) -> None:
    if run.warmup_end is not None and extra.get("warmup_end"):
        run.warmup_end = auto.WarmupEnd.from_state(extra["warmup_end"])
        if run.warmup_end.ended is not None:
            run.warmup = run.warmup_end.ended
            run.schedule = settings.coreg.resolve(settings.epochs, run.warmup)
    if run.guard is not None and extra.get("guard"):
        run.guard = BestEpochGuard.from_state(extra["guard"])
    run.weights_epoch = dict(extra.get("weights_epoch") or {})
    run.best_weights = {
        name: {k: v.cpu() for k, v in state.items()} for name, state in (extra.get("best_weights") or {}).items()
    }


def _update_config(out: Path, values: dict[str, Any]) -> None:
    config = rf.read_config(out)
    config.update(values)
    rf.write_json(out / rf.CONFIG, config)
