"""The run folder's lifecycle and resume policy: which folder a new run may use (the new-folder rule, a run that
saved nothing starts over), what a resumed run may change, config.json at the start, and the divergence advice.

trainer.train() calls `settings_for_call` before assembly and `start` after it; the loop calls `diverged`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from coreg_edge import __version__, backbones
from coreg_edge.algorithm.config import SPEC_LR
from coreg_edge.annotation_file import load as load_annotation
from coreg_edge.data import absolute_data
from coreg_edge.digests import content_id
from coreg_edge.errors import UserError
from coreg_edge.locks import exclusive, is_lock_file
from coreg_edge.logs import info
from coreg_edge.settings.train import RESUME_OVERRIDES, TrainSettings
from coreg_edge.training import auto
from coreg_edge.training import run_folder as rf
from coreg_edge.training.checkpoint import checkpoint_bytes, load_checkpoint
from coreg_edge.training.context import Diverged, TrainingError
from coreg_edge.training.hooks import restore_extra

if TYPE_CHECKING:
    from coreg_edge.training.assembly import Run


def resume_settings(stored: dict[str, Any], options: dict[str, Any]) -> TrainSettings:
    """A resumed run's settings: the stored ones, but where and how it runs (another machine, the images
    moved) comes from this call; what it computes (epochs, method, hyperparameters) may not change."""
    merged = dict(stored)
    merged.update({k: v for k, v in options.items() if k in RESUME_OVERRIDES and v is not None})
    return TrainSettings.from_dict(merged)


def diverged(out: Path, exc: Diverged, epoch: int, settings: TrainSettings) -> TrainingError:
    """Record the divergence (so that --resume may lower the learning rate) and say what to do, in one line."""
    lr = settings.coreg.lr
    saved = (out / rf.CHECKPOINT).exists()
    rf.write_json(out / rf.DIVERGED, {"epoch": epoch, "reason": str(exc), "lr": lr, "checkpoint": saved})
    lower = f"--set lr={max(min(lr / 10, SPEC_LR), settings.coreg.min_lr):g}"
    if saved:
        then = f"the checkpoint of the last good epoch is kept: coreg-edge train --resume --out {out} {lower}"
    else:
        then = f"no epoch was saved: run the same train command again with {lower} (it starts over)"
    amp = ", or --amp off" if settings.amp != "off" and torch.cuda.is_available() else ""
    return TrainingError(f"training diverged: {exc}; lower the learning rate (now {lr:g}){amp}; {then}")


def _refuse_used_out(out: Path) -> None:
    """A new run goes into a new or empty folder, or one whose run saved nothing (it starts over)."""
    if _saved_nothing(out):
        return
    if (out / rf.CONFIG).exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if out.is_dir() and any(not is_lock_file(p) for p in out.iterdir()):
        raise UserError(f"--out {out}: exists and is not a run folder; choose a new or empty folder")


def check_before_launch(annotation: str | Path | None, out: str | Path, resume: bool) -> None:
    """What a run refuses first (its folder in use or taken, an unreadable annotation), checked once by
    `train --nproc` before it starts its processes: each would load torch and meet the same error seconds later.
    Rank 0 checks again (and acts) when the run starts."""
    out = Path(out)
    with exclusive(out, "run folder"):  # in use by another run? (a resumed run's config: the CLI read it)
        if not resume:
            _refuse_used_out(out)
    if not resume and annotation is not None:
        load_annotation(annotation)


def _saved_nothing(out: Path) -> bool:
    """A run folder of ours whose training stopped before the first checkpoint: it holds only config.json
    (written by coreg-edge), metrics and a divergence record, so starting over loses nothing."""
    try:
        config = json.loads((out / rf.CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    ours = isinstance(config, dict) and {"format_version", "coreg_edge_version", "method"} <= set(config)
    allowed = {rf.CONFIG, rf.METRICS, rf.DIVERGED}
    return ours and all(p.name in allowed or is_lock_file(p) for p in out.iterdir())


def _refuse_changed_weights(out: Path, config: dict[str, Any], settings: TrainSettings) -> None:
    """A resumed run continues from its checkpoint, never from --pretrained-backbone FILE again; but a FILE
    whose content changed since the run started means the user now wants other weights than the run has,
    and its config would name them: one line instead. A FILE gone is fine (the checkpoint holds the weights)."""
    recorded = config.get("pretrained_backbone_sha256")
    now = weights_digest(settings.pretrained_backbone) if recorded else None
    if now is not None and now != recorded:
        raise UserError(
            f"{out}: --pretrained-backbone {settings.pretrained_backbone} is not the file this run started from "
            f"(its content changed: {str(recorded)[:19]}... when it started, now {now[:19]}...); restore that "
            "file to resume, or start a new run to train from the new one"
        )


def weights_digest(value: str | None) -> str | None:
    """"sha256:<hex>" of a --pretrained-backbone FILE; None for timm's own weights, none, or no such file."""
    return None if value is None or value == backbones.TIMM else content_id(value)


def _resume_lr(out: Path, coreg: dict[str, Any], settings: TrainSettings) -> float | None:
    """The one algorithm setting a resume may change: a lower learning rate after a divergence."""
    changed = {key: value for key, value in coreg.items() if value != getattr(settings.coreg, key, None)}
    if not changed:
        return None
    if set(changed) != {"lr"} or rf.diverged(out) is None:
        raise UserError(
            f"--resume continues the run with its stored settings; {', '.join(sorted(changed))} may not change "
            "(only lr, and only after the run diverged)"
        )
    return float(changed["lr"])


def settings_for_call(
    out: Path, annotation: str | Path | None, resume: bool, settings: TrainSettings | None,
    options: dict[str, Any],
) -> tuple[TrainSettings, dict[str, Any] | None, str | Path, float | None]:  # fmt: skip
    """Resume or new: (settings, the stored config when resuming, the annotation file, a new lr)."""
    config, new_lr = None, None
    if resume:
        config = rf.read_config(out)
        if "chosen" not in config:
            raise UserError(
                f"{out} was started by coreg-edge {config.get('coreg_edge_version', '(unknown)')}, which chose "
                "its defaults by other rules; resume it with that version, or start a new run"
            )
        settings = resume_settings(config["settings"], options)
        _refuse_changed_weights(out, config, settings)
        new_lr = _resume_lr(out, options.get("coreg") or {}, settings)
        if new_lr is not None:
            info(f"resuming a diverged run with lr {new_lr:g} (was {settings.coreg.lr:g})")
            settings = dataclasses.replace(settings, coreg={**settings.coreg.to_dict(), "lr": new_lr})
        annotation = config["annotation"]
        info(f"resuming {out} with its stored settings ({settings.method}, {settings.backbone}, {settings.epochs} epochs)")
    else:
        if _saved_nothing(out):
            info(f"the run in {out} stopped before its first epoch was saved: starting it over")
            for name in (rf.CONFIG, rf.METRICS, rf.DIVERGED):
                (out / name).unlink(missing_ok=True)
        _refuse_used_out(out)
    # Folders are stored absolute: --resume and export from another working directory find them.
    settings = dataclasses.replace(
        settings,
        data=absolute_data(settings.data),
        eval_data=absolute_data(settings.eval_data),
        val_data=absolute_data(settings.val_data),
        pretrained_backbone=backbones.absolute_weights(settings.pretrained_backbone),
    )
    return settings, config, annotation, new_lr


def start_run(
    out: Path,
    run: Run,
    settings: TrainSettings,
    config: dict[str, Any] | None,
    annotation: str | Path,
    new_lr: float | None,
) -> int:
    """Restore the checkpoint (resume; config.json then says what this call changed) or write config.json
    (new). Returns the first epoch to train."""
    processes = process_summary(run)
    if config is not None:
        # Rank 0 reads the file; the other ranks (maybe on other machines) get its bytes.
        blob = run.group.decide(lambda: checkpoint_bytes(out / rf.CHECKPOINT)) if run.group.active else None
        start, extra = load_checkpoint(out / rf.CHECKPOINT, run.ctx, run.peers, run.bank, blob)
        restore_extra(run, extra, settings)
        if not run.group.is_main:
            return start
        _truncate_metrics(out / rf.METRICS, start)
        before = config.get("processes", {}).get("world_size", 1)
        config.update(
            settings=settings.to_dict(), schedule=run.schedule.describe(), data=run.source.describe(),
            processes=processes,
        )  # fmt: skip
        if new_lr is not None:
            config.setdefault("lr_changes", []).append(
                {"after_divergence": True, "epoch": start, "lr": new_lr}
            )
        if before != run.group.world:
            config.setdefault("world_changes", []).append({"epoch": start, **processes})
            info(f"resuming on {run.group.world} process(es) (the run had {before}): the global batch stays "
                 f"{processes['global_batch']}, {processes['batch_per_process']} per process")  # fmt: skip
        rf.write_json(out / rf.CONFIG, config)
        return start
    if not run.group.is_main:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    ann, device = run.ann, run.ctx.device
    rf.write_json(out / rf.CONFIG, {
        "format_version": rf.RUN_FORMAT_VERSION, "method": settings.method, "network": run.net_config.to_dict(),
        "preprocess": run.pre.to_metadata(), "class_names": ann.class_names,
        "annotation": str(Path(annotation).resolve()), "annotator": ann.annotator, "data": run.source.describe(),
        "eval_data": settings.eval_data, "settings": settings.to_dict(), "schedule": run.schedule.describe(),
        "chosen": run.chosen, "seed": settings.seed, "device": str(device), "processes": processes,
        "coreg_edge_version": __version__,
        **({"pretrained_backbone_sha256": run.pretrained_sha256} if run.pretrained_sha256 else {}),
    })  # fmt: skip
    n_train, n_hold = len(run.train_rows), len(run.holdout_rows)
    if run.chosen:
        info(auto.describe(run.chosen))
    warmup = f"auto, {run.warmup_end.low}-{run.warmup_end.high}" if run.warmup_end else run.warmup
    batch = f"batch {settings.batch_size}"
    if run.group.active:
        batch += (f" per process x {run.group.world} processes ({run.group.backend}; global batch "
                  f"{processes['global_batch']})")  # fmt: skip
    info(f"training {settings.method} on {n_train} items ({n_hold} held out), {settings.backbone} at "
         f"{run.pre.input_size[0]} px, {settings.epochs} epochs (warm-up {warmup}), {batch}, {device}")  # fmt: skip
    return 0


def _truncate_metrics(path: Path, epochs: int) -> None:
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()[:epochs]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def process_summary(run: Run) -> dict[str, Any]:
    """How many processes train, and the global batch they share (its learning rate: auto.choose_lr)."""
    world, global_batch = run.group.world, run.ctx.batch_size
    return {"world_size": world, "backend": run.group.backend, "global_batch": global_batch,
            "batch_per_process": -(-global_batch // world)}  # fmt: skip
