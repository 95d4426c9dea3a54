"""The momentum (key) encoder behind the contrastive keys (spec sections 3, 9)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def momentum_update(key_module: nn.Module, online_module: nn.Module, momentum: float = 0.999) -> None:
    """`k <- m * k + (1 - m) * q` for every PARAMETER; buffers (BatchNorm statistics) are left alone.

    Reference code (spec section 9): parameters only, and the key encoder runs in train mode, so its BN
    layers use and update their own batch statistics.
    """
    for key_param, online_param in zip(key_module.parameters(), online_module.parameters(), strict=True):
        key_param.mul_(momentum).add_(online_param.detach().to(key_param.dtype), alpha=1.0 - momentum)


@torch.no_grad()
def copy_parameters(key_module: nn.Module, online_module: nn.Module) -> None:
    """Re-initialise the key encoder from the online network: parameters copied, frozen; buffers untouched.

    The reference code does this at the start of every post-warm-up epoch (spec section 3).
    """
    for key_param, online_param in zip(key_module.parameters(), online_module.parameters(), strict=True):
        key_param.copy_(online_param.detach())
        key_param.requires_grad_(False)
