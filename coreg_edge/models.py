"""Networks: a timm backbone + linear classifier + projection head, from one factory.

`create_network("resnet18", num_classes=10, image_size=32)` is the one entry point. For small inputs
(<= 64 px) ResNet-style backbones get the paper's small-input stem (3x3 stride-1 first conv, no
max-pool), which stays plain convolutions and so exports to ONNX like any other layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import timm
import torch
from torch import nn

from coreg_edge.errors import UserError

SMALL_INPUT_MAX = 64


@dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild a network before loading its weights (stored in the run folder)."""

    backbone: str = "resnet18"
    num_classes: int = 10
    in_chans: int = 3
    image_size: int = 32
    small_stem: bool | None = None  # None: on for ResNet-style backbones at <= 64 px
    proj_hidden: int = 512
    proj_dim: int = 128
    drop_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class CoRegNetwork(nn.Module):
    """backbone -> feature -> (classifier logits, L2-normalised projection) (docs/ALGORITHM.md#networks).

    One `forward`: logits only by default, so the exported graph is the deployable classifier; training
    asks `with_projection=True` for both heads from one backbone pass. Being the module's own forward, it is
    what a DistributedDataParallel wrapper hooks (a separate training method would bypass its gradient sync).
    """

    def __init__(
        self, backbone: nn.Module, num_features: int, num_classes: int, proj_hidden: int, proj_dim: int
    ):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(num_features, num_classes)
        self.projector = nn.Sequential(
            nn.Linear(num_features, proj_hidden), nn.ReLU(inplace=True), nn.Linear(proj_hidden, proj_dim)
        )

    def forward(
        self, images: torch.Tensor, with_projection: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        if not with_projection:
            return self.classifier(features)
        projection = nn.functional.normalize(self.projector(features), dim=1)
        return self.classifier(features), projection


def is_resnet_style(model: nn.Module) -> bool:
    return hasattr(model, "conv1") and hasattr(model, "maxpool")


def apply_small_input_stem(model: nn.Module) -> None:
    """3x3 stride-1 first convolution and no max-pool: keeps resolution on 32 px inputs (paper's stem)."""
    conv1 = model.conv1
    if isinstance(conv1, nn.Conv2d):
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
    else:  # deep stems (resnet10t, resnet26d, ...): the first conv of the stack loses its stride
        first = next(m for m in conv1.modules() if isinstance(m, nn.Conv2d))
        first.stride = (1, 1)
    model.maxpool = nn.Identity()


def timm_body(backbone: str, *, in_chans: int = 3, drop_rate: float = 0.0) -> nn.Module:
    """The timm model without its classifier (num_classes=0: it returns pooled features), random weights."""
    if not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone}*")[:5]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UserError(f"--backbone {backbone}: not a timm model{hint}")
    try:
        return timm.create_model(
            backbone, pretrained=False, num_classes=0, in_chans=in_chans, drop_rate=drop_rate
        )
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UserError(f"--backbone {backbone}: timm cannot build it ({exc})") from exc


def create_network(
    backbone: str = "resnet18",
    num_classes: int = 10,
    *,
    in_chans: int = 3,
    image_size: int = 32,
    small_stem: bool | None = None,
    proj_hidden: int = 512,
    proj_dim: int = 128,
    drop_rate: float = 0.0,
) -> CoRegNetwork:
    """Any timm model name, with random weights (the paper's networks start from scratch; a pretrained
    start loads its weights into `.backbone` afterwards: coreg_edge/backbones.py)."""
    body = timm_body(backbone, in_chans=in_chans, drop_rate=drop_rate)
    if small_stem is None:
        small_stem = image_size <= SMALL_INPUT_MAX and is_resnet_style(body)
    if small_stem:
        if not is_resnet_style(body):
            raise UserError(
                f"--small-stem applies to ResNet-style backbones; {backbone} has no conv1/maxpool"
            )
        apply_small_input_stem(body)
    # The pooled feature width: num_features for most models, head_hidden_size when timm keeps a
    # pre-logits conv head (mobilenetv3, lcnet); probing once is the only rule that holds for all.
    body.eval()
    with torch.no_grad():
        width = body(torch.zeros(1, in_chans, image_size, image_size)).shape[-1]
    body.train()
    return CoRegNetwork(body, width, num_classes, proj_hidden, proj_dim)


def network_from_config(config: NetworkConfig) -> CoRegNetwork:
    return create_network(
        config.backbone,
        config.num_classes,
        in_chans=config.in_chans,
        image_size=config.image_size,
        small_stem=config.small_stem,
        proj_hidden=config.proj_hidden,
        proj_dim=config.proj_dim,
        drop_rate=config.drop_rate,
    )
