"""`train()`: an annotation file -> a run folder with both peers, metrics, and the selected peer.

The trainer wires the pure algorithm (coreg_edge.algorithm) to cached data, devices, AMP, torch.compile and
checkpoints. Every epoch ends with a checkpoint, so an interrupted run (Ctrl-C, a crash, a NaN) resumes
exactly with `resume=True`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coreg_edge import __version__, backbones
from coreg_edge.algorithm import (
    ContrastiveQueue,
    LossHistory,
    PredictionTable,
    PrototypeBank,
)
from coreg_edge.algorithm.config import SPEC_LR
from coreg_edge.annotation_file import load as load_annotation
from coreg_edge.data import absolute_data, reopen
from coreg_edge.digests import content_id
from coreg_edge.errors import UserError
from coreg_edge.locks import exclusive, is_lock_file
from coreg_edge.models import NetworkConfig, network_from_config
from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.settings.fields import build
from coreg_edge.settings.train import RESUME_OVERRIDES, TrainSettings
from coreg_edge.training import auto, distributed
from coreg_edge.training import run_folder as rf
from coreg_edge.training.checkpoint import (
    checkpoint_bytes,
    load_checkpoint,
    peer_state,
    rank_state,
    save_checkpoint,
)
from coreg_edge.training.context import Context, Diverged, Peer, TrainingError
from coreg_edge.training.coreg import set_lr
from coreg_edge.training.data import load_eval_set, load_training_set, preprocess_for
from coreg_edge.training.distributed import ONE_PROCESS, FollowerExit, Group
from coreg_edge.training.evaluation import (
    accuracy,
    candidate_scores,
    class_shift,
    predict_logits,
    select_peer,
)
from coreg_edge.training.guard import BestEpochGuard
from coreg_edge.training.launch import LAUNCHER_PID
from coreg_edge.training.methods import EpochInputs, get_method
from coreg_edge.training.views import ViewConfig, Views
from coreg_edge.utils import json_safe, log, rank_device, resolve_device


class Interrupted(UserError):
    exit_code = 130


def _forward_fns(net: torch.nn.Module, module: torch.nn.Module, input_shape: tuple[int, ...],
                 device: torch.device, settings: TrainSettings, channels_last: bool):  # fmt: skip
    """(x -> (logits, projections), x -> logits) through `module` (the network, or its DDP wrapper under
    torchrun), compiled on CUDA when asked (probed on a tiny batch; eager on failure)."""

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def eager(x: torch.Tensor):
        return module(prepare(x), with_projection=True)

    def eager_logits(x: torch.Tensor):
        return module(prepare(x))

    want = settings.compile == "on" or (settings.compile == "auto" and device.type == "cuda")
    if not want:
        return eager, eager_logits
    try:
        compiled, compiled_logits = torch.compile(eager), torch.compile(eager_logits)
        probe = torch.zeros((2, *input_shape), device=device)
        was_training = net.training
        net.eval()  # a train-mode probe would move the BatchNorm running statistics of the starting weights
        try:
            with torch.no_grad():
                compiled(probe)
                compiled_logits(probe)
        finally:
            net.train(was_training)
        return compiled, compiled_logits
    except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
        warnings.warn(
            f"torch.compile failed on a probe batch, training eagerly ({type(exc).__name__}: {exc})",
            stacklevel=2,
        )
        return eager, eager_logits


def _build_peer(name: str, config: NetworkConfig, settings: TrainSettings, device, n: int, c: int, seed: int,
                channels_last: bool, load_pretrained: bool = True, group: Group = ONE_PROCESS) -> Peer:  # fmt: skip
    """One network, its optimizer and the method's memories. A pretrained start loads the same weights into
    every peer's backbone (their heads differ by seed); a resumed run's checkpoint replaces them afterwards.
    The optimizer's param groups carry an `lr_scale` that set_lr applies: the backbone's is
    backbones.backbone_lr_scale (0.1 when pretrained: the new heads must move far, the features little).
    Under torchrun the gradient forwards go through DistributedDataParallel (distributed.wrap)."""
    torch.manual_seed(seed)
    net = network_from_config(config)  # random weights; network_from_config never loads pretrained ones
    if settings.pretrained_backbone is not None and load_pretrained:
        backbones.load_into(net.backbone, settings.pretrained_backbone, config.backbone, config.in_chans)
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net, module = distributed.wrap(net, group, device, settings.sync_bn)
    cfg = settings.coreg
    optimizer = torch.optim.SGD(
        backbones.param_groups(net, cfg.lr, backbones.backbone_lr_scale(settings)),
        lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
    )  # fmt: skip
    input_shape = (config.in_chans, config.image_size, config.image_size)
    forward, forward_logits = _forward_fns(net, module, input_shape, device, settings, channels_last)
    peer = Peer(name, net, optimizer, forward, forward_logits=forward_logits)
    if get_method(settings.method).co_training:
        key_net = network_from_config(config).to(device)
        key_net.load_state_dict(net.state_dict())
        for p in key_net.parameters():
            p.requires_grad_(False)
        peer.key_net = key_net
        peer.queue = ContrastiveQueue(min(cfg.queue_size, n), cfg.proj_dim, c, device=device)
        peer.table = PredictionTable(n, c, device=device)
        peer.history = LossHistory(n, cfg.gmm_history, device=device)
    return peer


PROBE_ITEMS = 512  # training items whose predicted classes are counted every epoch (the guard's class shift)


def resume_settings(stored: dict[str, Any], options: dict[str, Any]) -> TrainSettings:
    """A resumed run's settings: the stored ones, but where and how it runs (another machine, the images
    moved) comes from this call; what it computes (epochs, method, hyperparameters) may not change."""
    merged = dict(stored)
    merged.update({k: v for k, v in options.items() if k in RESUME_OVERRIDES and v is not None})
    return TrainSettings.from_dict(merged)


def _diverged(out: Path, exc: Diverged, epoch: int, settings: TrainSettings) -> TrainingError:
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


def _check_weights(peers: list[Peer], epoch: int) -> None:
    """Raise Diverged when any peer's weights are NaN or infinite (one host sync for all of them)."""
    flags = [torch.isfinite(p).all() for peer in peers for p in peer.net.parameters()]
    if flags and not bool(torch.stack(flags).all()):
        raise Diverged(f"a network's weights became NaN or infinite during epoch {epoch}")


def _refuse_changed_weights(out: Path, config: dict[str, Any], settings: TrainSettings) -> None:
    """A resumed run continues from its checkpoint, never from --pretrained-backbone FILE again; but a FILE
    whose content changed since the run started means the user now wants other weights than the run has,
    and its config would name them: one line instead. A FILE gone is fine (the checkpoint holds the weights)."""
    recorded = config.get("pretrained_backbone_sha256")
    now = _weights_digest(settings.pretrained_backbone) if recorded else None
    if now is not None and now != recorded:
        raise UserError(
            f"{out}: --pretrained-backbone {settings.pretrained_backbone} is not the file this run started from "
            f"(its content changed: {str(recorded)[:19]}... when it started, now {now[:19]}...); restore that "
            "file to resume, or start a new run to train from the new one"
        )


def _weights_digest(value: str | None) -> str | None:
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
    with distributed.joined() as group, contextlib.ExitStack() as held:
        quiet = quiet or not group.is_main

        def checks() -> tuple[TrainSettings, dict[str, Any] | None, str | Path, float | None]:
            held.enter_context(exclusive(out, "run folder"))
            call = settings if resume else build(TrainSettings, settings, options)
            return _settings_for_call(out, annotation, resume, call, options, quiet)

        chosen, config, annotation, new_lr = group.decide(checks)
        run = _prepare(chosen, annotation, quiet, config, group)
        if config is not None:
            run.chosen = config.get("chosen", {})  # what the run chose when it started (stored resolved since)
        start = _start(out, run, run.settings, config, annotation, new_lr, quiet)
        _fit(out, run, run.settings, start, quiet)
        return _finish(out, run, run.settings, quiet)


def _settings_for_call(
    out: Path, annotation: str | Path | None, resume: bool, settings: TrainSettings | None,
    options: dict[str, Any], quiet: bool,
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
            log(f"resuming a diverged run with lr {new_lr:g} (was {settings.coreg.lr:g})", quiet)
            settings = dataclasses.replace(settings, coreg={**settings.coreg.to_dict(), "lr": new_lr})
        annotation = config["annotation"]
        log(
            f"resuming {out} with its stored settings ({settings.method}, {settings.backbone}, {settings.epochs} epochs)",
            quiet,
        )
    else:
        if _saved_nothing(out):
            log(f"the run in {out} stopped before its first epoch was saved: starting it over", quiet)
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


@dataclass
class _Run:
    """Everything an epoch needs, built once: data, split, networks, views, memories, schedule."""

    ann: Any
    method: Any
    source: Any
    pre: Any
    net_config: NetworkConfig
    ctx: Context
    peers: list[Peer]
    bank: PrototypeBank | None
    schedule: Any
    warmup: int
    train_rows: torch.Tensor
    holdout_rows: torch.Tensor
    probe_rows: torch.Tensor  # up to PROBE_ITEMS training items: with the held-out ones, the class shift's sample
    eval_set: Any
    val_set: Any
    prior: torch.Tensor | None
    settings: TrainSettings  # with every automatic choice made (auto.resolve_settings)
    chosen: dict[str, dict[str, Any]]  # what was chosen and why
    warmup_end: auto.WarmupEnd | None  # an automatic warm-up's stopping rule
    guard: BestEpochGuard | None
    best_weights: dict[str, dict[str, torch.Tensor]]  # per peer, the best held-out epoch's state_dict
    weights_epoch: dict[str, int]  # per peer, the epoch its current weights come from (its best after a rollback)
    group: Group = ONE_PROCESS  # the torchrun processes (one by default)
    pretrained_sha256: str | None = None  # a new run's --pretrained-backbone FILE, by content (config.json)


def _prepare(settings: TrainSettings, annotation: str | Path, quiet: bool, stored: dict | None = None,
             group: Group = ONE_PROCESS) -> _Run:  # fmt: skip
    """Data (training set, --eval, --val), the held-out split, networks and the method's state.

    `stored` (a resumed run's config.json): its preprocessing and network are used as they are (not
    recomputed: another version or another timm could compute others), and no pretrained weights load (the
    checkpoint replaces them; the file or cache need not exist any more). Under torchrun each rank takes its
    own GPU, rank 0 decodes (and caches) the images first, and the batch is per process (global: x world)."""
    method = get_method(settings.method)
    with group.main_first():  # rank 0 first: it downloads what is missing, the others find it
        ann = load_annotation(annotation)
        if method.needs_labels and not ann.has_labels:
            raise UserError(f"--method {method.name} needs ground truth, and this annotation file has none")
        device = _device(settings, group)
        torch.manual_seed(settings.seed)
        source, _ = reopen(ann.data, settings.data, download=settings.download)
        # A pretrained backbone: a trial load fails fast (before the images load); its pretrained_cfg sets the
        # preprocessing (mean, std, interpolation, crop_pct, size unless --image-size); None from scratch.
        if stored is None:
            pretrained = backbones.check(settings, settings.channels or source.channels, quiet, ann.num_classes)
            pre = preprocess_for(source, settings.image_size, settings.channels, pretrained)
        else:
            pretrained, pre = None, PreprocessConfig.from_metadata(stored["preprocess"])
        data = load_training_set(ann, source, pre, settings.seed, device, cache=settings.cache, quiet=quiet,
                                 workers=settings.workers)  # fmt: skip
        eval_set, val_set = (
            load_eval_set(spec, ann.class_names, pre, device, cache=settings.cache, download=settings.download,
                          quiet=quiet, workers=settings.workers, option=option)  # fmt: skip
            if spec
            else None
            for spec, option in ((settings.eval_data, "--eval"), (settings.val_data, "--val"))
        )

    n, c = len(data), ann.num_classes
    order = np.random.default_rng(settings.seed).permutation(n)
    n_hold = int(round(settings.holdout * n))
    holdout_rows = torch.as_tensor(np.sort(order[:n_hold]), dtype=torch.long)
    train_rows = torch.as_tensor(np.sort(order[n_hold:]), dtype=torch.long)
    probe_rows = torch.as_tensor(np.sort(order[n_hold : n_hold + PROBE_ITEMS]), dtype=torch.long)

    net_config = NetworkConfig.from_dict(stored["network"]) if stored else NetworkConfig(
        backbone=settings.backbone, num_classes=c, in_chans=pre.channels, image_size=pre.input_size[0],
        small_stem=settings.small_stem if pretrained is None else False,  # a pretrained stem is kept
        proj_hidden=settings.coreg.proj_hidden, proj_dim=settings.coreg.proj_dim,
    )  # fmt: skip
    cuda = device.type == "cuda"
    channels_last = settings.channels_last == "on" or (settings.channels_last == "auto" and cuda)
    flip, dataset_rule = _dataset_views(ann.data)
    settings, chosen = auto.resolve_settings(
        settings, len(train_rows), pre.input_size[0], dataset_rule, method.co_training, group.world
    )
    strong = settings.strong_augment  # resolved: never "auto" here
    views = Views(
        ViewConfig(pre.input_size[0], pre.channels, pre.mean, pre.std, flip=flip, strong=strong),
        seed=distributed.rank_seed(settings.seed, group),
    )
    step_generator = None  # one process: MixUp's order comes from the batch order's generator, as always
    if group.active:
        step_generator = torch.Generator().manual_seed(distributed.rank_seed(settings.seed, group, stream=1))
    ctx = Context(
        device=device, store=data.store, candidates=data.candidates.to(device),
        labels=data.labels.to(device), top1=data.top1.to(device), views=views,
        batch_size=_global_batch(settings, stored, group),  # each rank computes its slice of every batch
        generator=torch.Generator().manual_seed(settings.seed), rng=np.random.default_rng(settings.seed),
        amp_dtype=_amp_dtype(settings.amp, device), group=group, step_generator=step_generator,
    )  # fmt: skip
    # The weights a new run starts from, by content (read just before the peers load them): a path alone
    # would let other weights behind the same name pass as the run's, and resume checks it.
    pretrained_sha256 = _weights_digest(settings.pretrained_backbone) if stored is None and group.is_main else None
    peers = [
        _build_peer(name, net_config, settings, device, n, c, settings.seed + i, channels_last, stored is None,
                    group)  # fmt: skip
        for i, name in enumerate(method.peers)
    ]
    for peer in peers:
        method.initialise(ctx, peer)
    bank = PrototypeBank(c, settings.coreg.proj_dim, device=device) if method.co_training else None
    warmup = settings.resolved_warmup()
    warmup_end = auto.WarmupEnd(*auto.warmup_bounds(settings.epochs)) if "warmup" in chosen else None
    prior = None
    if method.co_training and not settings.coreg.uniform_prior and ann.votes.shape[1]:
        from coreg_edge.algorithm import estimate_prior_from_votes

        prior = estimate_prior_from_votes(
            torch.as_tensor(ann.votes, dtype=torch.long), c, settings.coreg.prior_temperature
        ).to(device)
    return _Run(
        ann=ann, method=method, source=source, pre=pre, net_config=net_config, ctx=ctx, peers=peers, bank=bank,
        schedule=settings.coreg.resolve(settings.epochs, warmup), warmup=warmup, train_rows=train_rows,
        holdout_rows=holdout_rows, probe_rows=probe_rows, eval_set=eval_set, val_set=val_set, prior=prior, settings=settings,
        chosen=chosen, warmup_end=warmup_end, guard=_guard(settings, method, warmup, warmup_end),
        best_weights={}, weights_epoch={}, group=group, pretrained_sha256=pretrained_sha256,
    )  # fmt: skip


def _device(settings: TrainSettings, group: Group) -> torch.device:
    """The device of this process: under torchrun, GPU LOCAL_RANK (never one GPU for all ranks)."""
    device = torch.device(resolve_device(settings.device))
    if settings.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA devices (nccl); on the CPU (gloo) BatchNorm statistics are "
                        "averaged after each epoch instead")  # fmt: skip
    if not group.active or device.type != "cuda":
        return device
    if device.index is not None:
        raise UserError(f"--device {device}: under torchrun each process takes its own GPU; give --device cuda")
    device = torch.device(rank_device("cuda"))
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{group.world} processes on this machine, {torch.cuda.device_count()} GPU(s): start at "
                        "most one process per GPU")  # fmt: skip
    torch.cuda.set_device(device)
    return device


def _start(
    out: Path,
    run: _Run,
    settings: TrainSettings,
    config: dict[str, Any] | None,
    annotation: str | Path,
    new_lr: float | None,
    quiet: bool,
) -> int:
    """Restore the checkpoint (resume; config.json then says what this call changed) or write config.json
    (new). Returns the first epoch to train."""
    processes = _processes(run)
    if config is not None:
        # Rank 0 reads the file; the other ranks (maybe on other machines) get its bytes.
        blob = run.group.decide(lambda: checkpoint_bytes(out / rf.CHECKPOINT)) if run.group.active else None
        start, extra = load_checkpoint(out / rf.CHECKPOINT, run.ctx, run.peers, run.bank, blob)
        _restore_extra(run, extra, settings)
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
            log(f"resuming on {run.group.world} process(es) (the run had {before}): the global batch stays "
                 f"{processes['global_batch']}, {processes['batch_per_process']} per process", quiet)  # fmt: skip
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
        log(auto.describe(run.chosen), quiet)
    warmup = f"auto, {run.warmup_end.low}-{run.warmup_end.high}" if run.warmup_end else run.warmup
    batch = f"batch {settings.batch_size}"
    if run.group.active:
        batch += (f" per process x {run.group.world} processes ({run.group.backend}; global batch "
                  f"{processes['global_batch']})")  # fmt: skip
    log(f"training {settings.method} on {n_train} items ({n_hold} held out), {settings.backbone} at "
         f"{run.pre.input_size[0]} px, {settings.epochs} epochs (warm-up {warmup}), {batch}, {device}",
         quiet)  # fmt: skip
    return 0


def _global_batch(settings: TrainSettings, stored: dict[str, Any] | None, group: Group) -> int:
    """The items of one step over all processes: --batch-size per process x processes for a new run. A
    resumed run keeps the global batch it started with (its learning rate was chosen for it), whatever the
    number of processes now: each takes a slice of it."""
    if stored is not None:
        return int(stored.get("processes", {}).get("global_batch", settings.batch_size))
    return settings.batch_size * group.world


def _processes(run: _Run) -> dict[str, Any]:
    """How many processes train, and the global batch they share (its learning rate: auto.choose_lr)."""
    world, global_batch = run.group.world, run.ctx.batch_size
    return {"world_size": world, "backend": run.group.backend, "global_batch": global_batch,
            "batch_per_process": -(-global_batch // world)}  # fmt: skip


def _fit(out: Path, run: _Run, settings: TrainSettings, start: int, quiet: bool) -> None:
    """The epochs: the method's epoch, evaluation, the label-free guard, metrics line, checkpoint; Ctrl-C and
    divergence leave a resumable folder and one line."""
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
                _evaluate(run.ctx, run.peers, run.holdout_rows, run.eval_set, run.val_set, run.probe_rows)
            )
            record = run.group.share(record)  # one record, so that every rank takes the same decisions
            _check_weights(run.peers, epoch)  # a finite loss can still leave NaN weights: never checkpoint them
            _after_epoch(out, run, settings, epoch, record, quiet)
            record["seconds"] = time.perf_counter() - began
            ranks = run.group.collect(rank_state(run.ctx)) if run.group.active else None
            if run.group.is_main:
                # Metrics line first: a crash before the checkpoint leaves an extra line that resume truncates.
                with open(out / rf.METRICS, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
                save_checkpoint(out / rf.CHECKPOINT, epoch + 1, run.ctx, run.peers, run.bank, _extra(run), ranks)
            log(_epoch_line(record, settings.epochs), quiet)
            for line in record.get("events", []):
                log(line, quiet)
    except KeyboardInterrupt as exc:
        if not run.group.is_main:
            raise FollowerExit(Interrupted.exit_code) from exc
        raise Interrupted(
            f"interrupted in epoch {epoch + 1}; the {epoch} finished epoch(s) are saved: coreg-edge train --resume "
            f"--out {out}"
        ) from exc
    except RuntimeError as exc:
        if run.group.active and _lost_a_process(exc):  # another rank died (killed, out of memory, ...)
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
        raise _diverged(out, exc, epoch, settings) from exc
    if run.group.is_main:
        (out / rf.DIVERGED).unlink(missing_ok=True)


def _lost_a_process(exc: RuntimeError) -> bool:
    """Whether a collective failed because another rank went away (gloo, nccl and the store say so)."""
    text = str(exc).lower()
    return isinstance(exc, torch.distributed.DistError) or any(
        words in text for words in ("connection closed", "connection reset", "broken pipe")
    )


def _peer_scores(record: dict[str, Any], peers: list[Peer]) -> dict[str, dict[str, float]]:
    return {p.name: record["holdout"][p.name] for p in peers}


def _after_epoch(out: Path, run: _Run, settings: TrainSettings, epoch: int, record: dict, quiet: bool) -> None:
    """The label-free decisions after an epoch: end an automatic warm-up, keep new best weights, roll back or
    stop when the held-out score falls sharply (guard.py). What happened goes into the metrics record."""
    events: list[str] = []
    scores = _peer_scores(record, run.peers)
    end = run.warmup_end
    if end is not None and end.ended is None and run.schedule.is_warmup(epoch):
        mean_hit = sum(v["hit_rate"] for v in scores.values()) / len(scores)
        if end.observe(epoch, mean_hit):
            run.warmup = end.ended
            run.schedule = settings.coreg.resolve(settings.epochs, end.ended)
            record["warmup_ended"] = {"epochs": end.ended, "why": end.why}
            if run.guard is not None:  # a fall during the warm-up is the network still learning
                run.guard.act_from = end.ended
            events.append(f"warm-up ends after {end.ended} epochs: {end.why}")
            if run.group.is_main:
                _update_config(out, {"schedule": run.schedule.describe(), "warmup_ended": record["warmup_ended"]})
    if run.guard is None:
        if events:
            record["events"] = events
        return
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
                _restore_best(run, peer)
                peer.optimizer.state.clear()  # momentum of the failing steps would push the same way again
        who = f"peer {decision.peers[0]} goes back to its best epoch"
        if len(decision.peers) > 1:
            who = f"peers {' and '.join(decision.peers)} go back to their best epochs"
        events.append(f"epoch {epoch + 1}: {decision.why}; {who} and the learning rate is scaled by {run.guard.lr_scale:g}")
    elif decision.action == "stop":
        events.append(f"epoch {epoch + 1}: {decision.why} again; training stops and keeps the best epochs")
    if events:
        record["events"] = events


def _guard(
    settings: TrainSettings, method: Any, warmup: int, warmup_end: auto.WarmupEnd | None
) -> BestEpochGuard | None:
    """The label-free guard (None with --no-keep-best); it acts after Co-Reg's warm-up (an automatic one:
    from the epoch it ends, set then), or after a fifth of a baseline's epochs."""
    if not settings.keep_best:
        return None
    if not method.co_training:
        return BestEpochGuard(act_from=max(1, round(0.2 * settings.epochs)))
    return BestEpochGuard(act_from=settings.epochs if warmup_end is not None else warmup)


def _restore_best(run: _Run, peer: Peer) -> None:
    state = run.best_weights.get(peer.name)
    if state is not None:
        peer.net.load_state_dict(state)
        run.weights_epoch[peer.name] = run.guard.best[peer.name].epoch


def _extra(run: _Run) -> dict[str, Any]:
    """What the checkpoint needs beyond the training state: the label-free decisions and the best weights."""
    return {
        "warmup_end": run.warmup_end.state_dict() if run.warmup_end else None,
        "guard": run.guard.state_dict() if run.guard else None,
        "best_weights": run.best_weights,
        "weights_epoch": run.weights_epoch,
    }


def _restore_extra(run: _Run, extra: dict[str, Any], settings: TrainSettings) -> None:
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


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it is native (auto: CUDA only). fp16 would need loss scaling, which this trainer
    does not do, and emulated bf16 is slower than fp32: both fall back to fp32."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    if amp == "on":
        warnings.warn("--amp on: this GPU has no native bf16; training in fp32", stacklevel=2)
    return None


#: The built-ins whose strong view is the reference code's crop + flip + one zero-filled Cutout (no
#: RandAugment). FER2013 has it too, but is a folder, not a built-in: recipes/fer2013.toml sets
#: `strong_augment = "cutout"` (a folder is not told apart by guessing from its images).
CUTOUT_DATASETS = ("fmnist",)


def _dataset_views(data_block: dict) -> tuple[bool, str]:
    """(horizontal flips allowed, the dataset's strong-view rule) for the annotated data
    (docs/ALGORITHM.md#views); auto.choose_strong_views applies the input-size rule on top."""
    from coreg_edge.data import DATASETS

    info = DATASETS.get(data_block.get("root")) if data_block.get("source") == "builtin" else None
    flip = info.flip if info is not None else True
    return flip, "cutout" if info is not None and info.name in CUTOUT_DATASETS else "randaugment"


def _evaluate(
    ctx: Context, peers: list[Peer], holdout_rows, eval_set, val_set, probe_rows=None
) -> dict[str, Any]:
    """Held-out (label-free) scores every epoch, each peer's class shift on the held-out items and
    `probe_rows` (more items, a steadier share of each class), and test accuracy when --eval is given.
    Images stream through the stores batch by batch: no split is ever whole on the device."""
    result: dict[str, Any] = {}
    hold_candidates = ctx.candidates[holdout_rows.to(ctx.device)].cpu()
    for p in peers:
        p.net.eval()

    def all_logits(store: Any, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each peer's logits, and the pair's mean (the exported ensemble) when there are two."""
        out = {p.name: _predict(ctx, p, store, rows) for p in peers}
        if len(peers) == 2:
            out["ensemble"] = (out["a"] + out["b"]) / 2
        return out

    logits = all_logits(ctx.store, holdout_rows)
    result["holdout"] = {k: candidate_scores(v, hold_candidates) for k, v in logits.items()}
    if probe_rows is not None:
        probe = all_logits(ctx.store, probe_rows)
        probe_candidates = torch.cat([hold_candidates, ctx.candidates[probe_rows.to(ctx.device)].cpu()])
        for k, v in probe.items():
            both = torch.cat([logits[k], v]) if len(logits[k]) else v  # no held-out items: (0, 0) logits
            result["holdout"][k]["class_shift"] = class_shift(both, probe_candidates)
    for name, split in (("test_accuracy", eval_set), ("val_accuracy", val_set)):
        if split is None:
            continue
        out = all_logits(split.store, torch.arange(len(split.store)))
        result[name] = {k: accuracy(v, split.labels) for k, v in out.items()}
    for p in peers:
        p.net.train()
    return result


def _predict(ctx: Context, peer: Peer, store: Any, rows: torch.Tensor) -> torch.Tensor:
    """A peer's eval-view logits of `rows` of a store: under torchrun each rank predicts its slice and all
    ranks get all the logits."""
    logits = predict_logits(peer.logits, store, ctx.local(rows), ctx.views.eval)
    return ctx.gather(logits, len(rows))


def _epoch_line(record: dict, epochs: int) -> str:
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


def _truncate_metrics(path: Path, epochs: int) -> None:
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()[:epochs]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _finish(out: Path, run: _Run, settings: TrainSettings, quiet: bool) -> dict:
    """Keep each peer's final or best-epoch weights (guard.py), save both, pick one without clean labels (or
    by --val), write selection.json last."""
    ctx, peers, holdout_rows, group = run.ctx, run.peers, run.holdout_rows, run.group
    final = group.share(_evaluate(ctx, peers, holdout_rows, run.eval_set, run.val_set, run.probe_rows))
    metrics = group.share(rf.read_metrics(out) if group.is_main else None)
    last_epoch = metrics[-1]["epoch"] if metrics else settings.epochs - 1
    kept = None
    if run.guard is not None:
        epochs = {p.name: run.weights_epoch.get(p.name, last_epoch) for p in peers}
        kept = run.guard.kept_weights(epochs, {p.name: final["holdout"][p.name] for p in peers})
        if any(k["source"] == "best" for k in kept.values()):
            for peer in peers:
                if kept[peer.name]["source"] == "best":
                    _restore_best(run, peer)
            final = group.share(_evaluate(ctx, peers, holdout_rows, run.eval_set, run.val_set, run.probe_rows))
    scores: dict[str, dict[str, Any]] = {k: dict(v) for k, v in final["holdout"].items()}
    for k in scores:
        if "val_accuracy" in final:
            scores[k]["val_accuracy"] = final["val_accuracy"][k]
    if len(peers) == 2:
        selected, reason = select_peer(scores, "val_accuracy" if run.val_set is not None else "hit_rate")
    else:
        selected, reason = "a", f"{settings.method} trains a single network"
    identical = _identical_across_ranks(run)
    reject = _reject_thresholds(ctx, peers, holdout_rows)
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
        "reject_threshold": reject,
        "processes": {**_processes(run), "weights_identical_across_ranks": identical},
    }
    rf.write_json(out / rf.SELECTION, summary)
    acc = summary["test_accuracy"]["selected"]
    if kept and kept[selected]["source"] == "best":
        log(f"peer {selected} keeps epoch {kept[selected]['epoch'] + 1}: {kept[selected]['why']}", quiet)
    log(
        f"selected peer {selected}: {reason}" + (f"; test accuracy {acc:.4f}" if acc is not None else ""),
        quiet,
    )
    return group.share(summary)


def _identical_across_ranks(run: _Run) -> bool | None:
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


REJECT_ACCEPTS = 0.95  # the share of held-out (known-class) items the rejection threshold lets through


def _reject_thresholds(ctx: Context, peers: list[Peer], holdout_rows: torch.Tensor) -> dict[str, Any] | None:
    """Per network (a, b, ensemble), the top-1 probability that 95% of the held-out items reach: `predict
    --reject` answers "none of these" below it. Calibrated on held-out annotated items, never on test labels."""
    if len(holdout_rows) == 0:
        return None
    for p in peers:
        p.net.eval()
    logits = {p.name: _predict(ctx, p, ctx.store, holdout_rows) for p in peers}
    for p in peers:
        p.net.train()
    if len(peers) == 2:
        logits["ensemble"] = (logits["a"] + logits["b"]) / 2
    probs = {name: value.softmax(1) for name, value in logits.items()}
    out: dict[str, Any] = {"accepts": REJECT_ACCEPTS, "items": len(holdout_rows)}
    for name, p in probs.items():
        out[name] = round(float(torch.quantile(p.max(1).values.double(), 1.0 - REJECT_ACCEPTS)), 6)
    return out


def _best_epoch(metrics: list[dict], peer: str) -> int | None:
    """The epoch whose held-out hit rate (label-free) was highest for the selected peer (latest on ties)."""
    best, best_score = None, -1.0
    for record in metrics:
        score = record.get("holdout", {}).get(peer, {}).get("hit_rate")
        if score is not None and score == score and score >= best_score:
            best, best_score = record["epoch"], score
    return best
