"""Assembly: everything a run's epochs need, built once (`Run`): the data (training set, --eval, --val), the
held-out split, the automatic choices, views, the peers and the method's state, the label-free rules' state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coreg_edge import backbones
from coreg_edge.algorithm import PrototypeBank, estimate_prior_from_votes
from coreg_edge.annotation_file import load as load_annotation
from coreg_edge.data import DATASETS, reopen
from coreg_edge.errors import UserError
from coreg_edge.models import NetworkConfig
from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training import auto, distributed, hooks
from coreg_edge.training.context import Context, Peer
from coreg_edge.training.data import load_eval_set, load_training_set, preprocess_for
from coreg_edge.training.distributed import ONE_PROCESS, Group
from coreg_edge.training.guard import BestEpochGuard
from coreg_edge.training.methods import get_method
from coreg_edge.training.networks import amp_dtype, build_peer
from coreg_edge.training.resume import weights_digest
from coreg_edge.training.views import ViewConfig, Views
from coreg_edge.utils import rank_device, resolve_device

PROBE_ITEMS = 512  # training items whose predicted classes are counted every epoch (the guard's class shift)


@dataclass
class Run:
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
    # The epoch-end and train-end hooks by event, in order (hooks.py): add one with hooks.add_hook(run, ...)
    hooks: dict[str, list[Callable[..., None]]] = field(default_factory=hooks.default_hooks)


def prepare(settings: TrainSettings, annotation: str | Path, stored: dict | None = None,
            group: Group = ONE_PROCESS) -> Run:  # fmt: skip
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
            pretrained = backbones.check(settings, settings.channels or source.channels, ann.num_classes)
            pre = preprocess_for(source, settings.image_size, settings.channels, pretrained)
        else:
            pretrained, pre = None, PreprocessConfig.from_metadata(stored["preprocess"])
        data = load_training_set(ann, source, pre, settings.seed, device, cache=settings.cache,
                                 workers=settings.workers)  # fmt: skip
        eval_set, val_set = (
            load_eval_set(spec, ann.class_names, pre, device, cache=settings.cache, download=settings.download,
                          workers=settings.workers, option=option)  # fmt: skip
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
    flip, dataset_rule = dataset_views(ann.data)
    settings, chosen = auto.resolve_settings(
        settings, len(train_rows), pre.input_size[0], dataset_rule, method.co_training, group.world
    )
    strong = settings.strong_augment  # resolved: never "auto" here
    views = Views(
        ViewConfig.of(pre, flip=flip, strong=strong),
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
        amp_dtype=amp_dtype(settings.amp, device), group=group, step_generator=step_generator,
    )  # fmt: skip
    # The weights a new run starts from, by content (read just before the peers load them): a path alone
    # would let other weights behind the same name pass as the run's, and resume checks it.
    pretrained_sha256 = weights_digest(settings.pretrained_backbone) if stored is None and group.is_main else None
    peers = [
        build_peer(name, net_config, settings, device, n, c, settings.seed + i, channels_last, stored is None,
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
        prior = estimate_prior_from_votes(
            torch.as_tensor(ann.votes, dtype=torch.long), c, settings.coreg.prior_temperature
        ).to(device)
    return Run(
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


def _global_batch(settings: TrainSettings, stored: dict[str, Any] | None, group: Group) -> int:
    """The items of one step over all processes: --batch-size per process x processes for a new run. A
    resumed run keeps the global batch it started with (its learning rate was chosen for it), whatever the
    number of processes now: each takes a slice of it."""
    if stored is not None:
        return int(stored.get("processes", {}).get("global_batch", settings.batch_size))
    return settings.batch_size * group.world


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


#: The built-ins whose row names the reference code's crop + flip + one zero-filled Cutout as the strong view
#: (`strong_augment = "cutout"`, no RandAugment): derived from the rows, kept for the trainer's callers. FER2013
#: has it too, but is a folder, not a built-in: recipes/fer2013.toml sets `strong_augment = "cutout"` (a folder
#: is not told apart by guessing from its images).
CUTOUT_DATASETS = tuple(name for name, info in DATASETS.items() if info.strong_augment == "cutout")


def dataset_views(data_block: dict) -> tuple[bool, str]:
    """(horizontal flips allowed, the dataset's strong-view rule) for the annotated data, from the built-in's
    row (docs/ALGORITHM.md#views); auto.choose_strong_views applies the input-size rule on top. A folder:
    flips and RandAugment."""
    info = DATASETS.get(data_block.get("root")) if data_block.get("source") == "builtin" else None
    if info is None:
        return True, "randaugment"
    return info.flip, info.strong_augment
