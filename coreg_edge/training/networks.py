"""One peer's network, built for training: timm network, optimizer, forward functions (compiled on CUDA
when asked, channels_last), the Co-Reg memories, and the autocast dtype. Part of the assembly (assembly.py).
"""

from __future__ import annotations

import warnings

import torch

from coreg_edge import backbones
from coreg_edge.algorithm import ContrastiveQueue, LossHistory, PredictionTable
from coreg_edge.models import NetworkConfig, network_from_config
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training import distributed
from coreg_edge.training.context import Peer
from coreg_edge.training.distributed import ONE_PROCESS, Group
from coreg_edge.training.methods import get_method


def forward_fns(net: torch.nn.Module, module: torch.nn.Module, input_shape: tuple[int, ...],
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


def build_peer(name: str, config: NetworkConfig, settings: TrainSettings, device, n: int, c: int, seed: int,
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
    forward, forward_logits = forward_fns(net, module, input_shape, device, settings, channels_last)
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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it is native (auto: CUDA only). fp16 would need loss scaling, which this trainer
    does not do, and emulated bf16 is slower than fp32: both fall back to fp32."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    if amp == "on":
        warnings.warn("--amp on: this GPU has no native bf16; training in fp32", stacklevel=2)
    return None
