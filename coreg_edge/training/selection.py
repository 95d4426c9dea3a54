"""Selection: after the last epoch, keep each peer's final or best-epoch weights (guard.py), save both, pick one
peer without clean labels (or by --val), run the train-end hooks (reject thresholds) and write selection.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from coreg_edge.logs import info
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training import distributed
from coreg_edge.training import run_folder as rf
from coreg_edge.training.checkpoint import peer_state
from coreg_edge.training.evaluation import select_peer
from coreg_edge.training.hooks import HookArgs, restore_best, run_hooks
from coreg_edge.training.resume import process_summary
from coreg_edge.training.scores import evaluate

if TYPE_CHECKING:
    from coreg_edge.training.assembly import Run


def finish(out: Path, run: Run, settings: TrainSettings) -> dict:
    """Keep each peer's final or best-epoch weights (guard.py), save both, pick one without clean labels (or
    by --val), write selection.json last."""
    ctx, peers, holdout_rows, group = run.ctx, run.peers, run.holdout_rows, run.group
    final = group.share(evaluate(ctx, peers, holdout_rows, run.eval_set, run.val_set, run.probe_rows))
    metrics = group.share(rf.read_metrics(out) if group.is_main else None)
    last_epoch = metrics[-1]["epoch"] if metrics else settings.epochs - 1
    kept = None
    if run.guard is not None:
        epochs = {p.name: run.weights_epoch.get(p.name, last_epoch) for p in peers}
        kept = run.guard.kept_weights(epochs, {p.name: final["holdout"][p.name] for p in peers})
        if any(k["source"] == "best" for k in kept.values()):
            for peer in peers:
                if kept[peer.name]["source"] == "best":
                    restore_best(run, peer)
            final = group.share(evaluate(ctx, peers, holdout_rows, run.eval_set, run.val_set, run.probe_rows))
    scores: dict[str, dict[str, Any]] = {k: dict(v) for k, v in final["holdout"].items()}
    for k in scores:
        if "val_accuracy" in final:
            scores[k]["val_accuracy"] = final["val_accuracy"][k]
    if len(peers) == 2:
        selected, reason = select_peer(scores, "val_accuracy" if run.val_set is not None else "hit_rate")
    else:
        selected, reason = "a", f"{settings.method} trains a single network"
    identical = _identical_across_ranks(run)
    ended = HookArgs(out, run, settings)
    run_hooks(run, "on_train_end", ended)  # every rank: the reject thresholds gather the held-out logits
    if not group.is_main:
        return group.share(None)  # rank 0 writes the folder and says what it selected
    for p in peers:
        rf.save_weights(p.net, rf.peer_file(out, p.name))
    test = final.get("test_accuracy")
    summary = {
        "method": settings.method,
        "backbone": settings.backbone,
        "epochs": settings.epochs,
        "epochs_trained": last_epoch + 1,
        "selected": selected,
        "reason": reason,
        "scores": scores,
        "test_accuracy": {
            "a": test.get("a") if test else None,
            "b": test.get("b") if test else None,
            "ensemble": test.get("ensemble") if test else None,
            "selected": test.get(selected) if test else None,
        },
        "best_epoch": _best_epoch(metrics, selected),
        "kept": kept,
        "stopped_early": run.guard.stopped if run.guard else None,
        "guard_events": run.guard.events if run.guard else [],
        "warmup_epochs": run.warmup if run.method.co_training else 0,
        "chosen": run.chosen,
        "holdout_items": len(holdout_rows),
        "reject_threshold": ended.results.get("reject_threshold"),
        "processes": {**process_summary(run), "weights_identical_across_ranks": identical},
    }
    rf.write_json(out / rf.SELECTION, summary)
    acc = summary["test_accuracy"]["selected"]
    if kept and kept[selected]["source"] == "best":
        info(f"peer {selected} keeps epoch {kept[selected]['epoch'] + 1}: {kept[selected]['why']}")
    info(f"selected peer {selected}: {reason}" + (f"; test accuracy {acc:.4f}" if acc is not None else ""))
    return group.share(summary)


def _identical_across_ranks(run: Run) -> bool | None:
    """Whether every rank ends with the very same run state, bit for bit: both peers (parameters and buffers),
    their key encoders' parameters, queues, prediction tables and loss histories, the prototype bank. The key
    encoders' BatchNorm buffers are left out: the key encoder always runs in train mode, on its own rank's
    slice, so they never reach an output. None in one process."""
    if not run.group.active:
        return None
    state: dict[str, Any] = {"bank": None if run.bank is None else run.bank.state_dict()}
    for peer in run.peers:
        state[peer.name] = {k: v for k, v in peer_state(peer).items() if k != "optimizer"}
        if peer.key_net is not None:  # its parameters only
            names = {name for name, _ in peer.key_net.named_parameters()}
            state[peer.name]["key_net"] = {k: v for k, v in state[peer.name]["key_net"].items() if k in names}
    prints = run.group.collect(distributed.weights_fingerprint(state))
    return all(fingerprint == prints[0] for fingerprint in prints)



def _best_epoch(metrics: list[dict], peer: str) -> int | None:
    """The epoch whose held-out hit rate (label-free) was highest for the selected peer (latest on ties)."""
    best, best_score = None, -1.0
    for record in metrics:
        score = record.get("holdout", {}).get(peer, {}).get("hit_rate")
        if score is not None and score == score and score >= best_score:
            best, best_score = record["epoch"], score
    return best
