"""The epoch loop: each epoch sets the learning rate, runs the method's epoch, evaluates, runs the epoch-end
hooks (hooks.py: the label-free rules and the metrics log), and ends with a checkpoint. Ctrl-C, a lost process
and a divergence leave a resumable folder and one line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from coreg_edge.errors import UserError
from coreg_edge.logs import info
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training import run_folder as rf
from coreg_edge.training.checkpoint import rank_state, save_checkpoint
from coreg_edge.training.context import Diverged, Peer, TrainingError
from coreg_edge.training.coreg import set_lr
from coreg_edge.training.distributed import FollowerExit
from coreg_edge.training.hooks import HookArgs, checkpoint_extra, run_hooks
from coreg_edge.training.launch import LAUNCHER_PID
from coreg_edge.training.methods import EpochInputs
from coreg_edge.training.resume import diverged
from coreg_edge.training.scores import evaluate

if TYPE_CHECKING:
    from coreg_edge.training.assembly import Run


class Interrupted(UserError):
    exit_code = 130



def fit(out: Path, run: Run, settings: TrainSettings, start: int,
        save: Callable[..., None] = save_checkpoint) -> None:  # fmt: skip
    """The epochs: the method's epoch, evaluation, the epoch-end hooks (label-free rules, metrics line), the
    checkpoint (`save`); Ctrl-C and divergence leave a resumable folder and one line."""
    epoch = start
    try:
        for epoch in range(start, settings.epochs):
            if run.guard is not None and run.guard.stopped is not None:
                break
            began = time.perf_counter()
            lr = run.schedule.learning_rate(epoch) * (run.guard.lr_scale if run.guard else 1.0)
            for peer in run.peers:
                set_lr(peer, lr)
            record: dict[str, Any] = {"epoch": epoch, "lr": lr}
            inputs = EpochInputs(
                run.ctx, run.peers, settings, run.schedule, run.bank, run.train_rows, epoch, run.prior
            )
            record.update(run.method.epoch(inputs))
            record.update(
                evaluate(run.ctx, run.peers, run.holdout_rows, run.eval_set, run.val_set, run.probe_rows)
            )
            record = run.group.share(record)  # one record, so that every rank takes the same decisions
            _check_weights(run.peers, epoch)  # a finite loss can still leave NaN weights: never checkpoint them
            args = HookArgs(out, run, settings, epoch, record)
            run_hooks(run, "on_fit_epoch_end", args)  # the label-free decisions: warm-up end, best-epoch guard
            if args.events:
                record["events"] = args.events
            record["seconds"] = time.perf_counter() - began
            ranks = run.group.collect(rank_state(run.ctx)) if run.group.active else None
            run_hooks(run, "on_model_save", args)  # the metrics line first (hooks.metrics_log)
            if run.group.is_main:
                save(out / rf.CHECKPOINT, epoch + 1, run.ctx, run.peers, run.bank, checkpoint_extra(run), ranks)
            info(epoch_line(record, settings.epochs))
            for line in record.get("events", []):
                info(line)
    except KeyboardInterrupt as exc:
        if not run.group.is_main:
            raise FollowerExit(Interrupted.exit_code) from exc
        raise Interrupted(
            f"interrupted in epoch {epoch + 1}; the {epoch} finished epoch(s) are saved: coreg-edge train --resume "
            f"--out {out}"
        ) from exc
    except RuntimeError as exc:
        if run.group.active and lost_a_process(exc):  # another rank died (killed, out of memory, ...)
            if not run.group.is_main or LAUNCHER_PID in os.environ:  # `train --nproc` says which one died
                raise FollowerExit(1) from exc
            raise TrainingError(
                f"another process of the run stopped during epoch {epoch + 1} (killed, or out of memory: see its "
                f"output); the {epoch} finished epoch(s) are saved: coreg-edge train --resume --out {out}"
            ) from exc
        raise
    except Diverged as exc:  # every rank sees it (FiniteWatch and the division agree across ranks)
        if not run.group.is_main:
            raise FollowerExit(TrainingError.exit_code) from exc
        raise diverged(out, exc, epoch, settings) from exc
    if run.group.is_main:
        (out / rf.DIVERGED).unlink(missing_ok=True)


def lost_a_process(exc: RuntimeError) -> bool:
    """Whether a collective failed because another rank went away (gloo, nccl and the store say so)."""
    text = str(exc).lower()
    return isinstance(exc, torch.distributed.DistError) or any(
        words in text for words in ("connection closed", "connection reset", "broken pipe")
    )


def _check_weights(peers: list[Peer], epoch: int) -> None:
    """Raise Diverged when any peer's weights are NaN or infinite (one host sync for all of them)."""
    flags = [torch.isfinite(p).all() for peer in peers for p in peer.net.parameters()]
    if flags and not bool(torch.stack(flags).all()):
        raise Diverged(f"a network's weights became NaN or infinite during epoch {epoch}")


def epoch_line(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch'] + 1}/{epochs} [{record['phase']}]"]
    losses = []
    for peer, terms in record["loss"].items():
        value = terms.get("total", next(iter(terms.values())))
        losses.append(f"{peer}={value:.3f}")
    parts.append("loss " + " ".join(losses))
    if "p_share" in record["loss"].get("a", {}):
        parts.append("P " + " ".join(f"{k}={v['p_share']:.0%}" for k, v in record["loss"].items()))
    if "test_accuracy" in record:
        parts.append(
            "test " + " ".join(f"{k}={v:.3f}" for k, v in record["test_accuracy"].items() if v is not None)
        )
    parts.append(f"{record['seconds']:.1f}s")
    return " | ".join(parts)
