"""Pretrained backbones: where the weights come from and how they load into `CoRegNetwork.backbone`
(docs/ALGORITHM.md#pretrained-backbones).

`--pretrained-backbone timm` takes timm's own weights of the architecture (the Hugging Face hub, through its
cache); `--pretrained-backbone FILE` a `.safetensors` file or a PyTorch/timm checkpoint (`.pth/.pt/.bin`,
read with `weights_only=True`) of that architecture's weights. In both cases:

- the checkpoint's classifier (timm's `pretrained_cfg["classifier"]`, e.g. `fc`; or a coreg-edge peer file's
  `classifier`/`projector`) is dropped and reported: the classes get the CoRegNetwork's own new heads;
- every other tensor must fit the backbone exactly (names and shapes), else one line names a few that do not;
- a first convolution of 3 input channels is adapted to `in_chans` with timm's `adapt_input_conv` (1 channel:
  the sum of the RGB filters), as timm does for its own weights;
- the architecture's `pretrained_cfg` (input size, mean, std, interpolation, crop_pct: known to timm offline)
  is what the weights were trained with, and becomes the run's preprocessing (training/data.py).

Loading happens per peer when training builds its networks; `network_from_config` (export, `load_network`)
never loads pretrained weights: the trained weights replace them anyway, and export works offline.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import huggingface_hub.constants as hub_constants
import timm
import timm.models
import torch
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn

from coreg_edge.errors import UserError
from coreg_edge.hub import hub_offline, network_reachable
from coreg_edge.logs import info
from coreg_edge.models import timm_body
from coreg_edge.utils import one_line

TIMM = "timm"
# Backbone lr / head lr with pretrained weights: the usual fine-tuning practice. The new heads start from
# random weights and must move far; the pretrained features need to move little, and a full learning rate
# in the first epochs (when the heads' gradients are large and noisy) would wash them out.
PRETRAINED_LR_SCALE = 0.1
RUN_HEADS = ("classifier", "projector")  # a coreg-edge peer file: backbone.* plus these heads
WRAPPERS = (
    "state_dict_ema",
    "model_ema",
    "state_dict",
    "model",
    "model_state_dict",
)  # timm's order: EMA first
SMALL_STEM_ERROR = (
    "--small-stem replaces the first convolution, whose pretrained weights would then be random: drop "
    "--small-stem with --pretrained-backbone (the pretrained stem is kept; train at a larger --image-size "
    "if the inputs are small)"
)


def absolute_weights(value: str | None) -> str | None:
    """A FILE made absolute (a resumed run or a recipe run elsewhere finds it); `timm`, None and a path that
    does not exist stay as given (the error then names it as typed)."""
    if value is None or value == TIMM:
        return value
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def backbone_lr_scale(settings: Any) -> float:
    """Backbone lr / head lr: `backbone_lr_scale` when set, else PRETRAINED_LR_SCALE with pretrained weights
    and 1.0 from scratch."""
    if settings.backbone_lr_scale is not None:
        return float(settings.backbone_lr_scale)
    return PRETRAINED_LR_SCALE if settings.pretrained_backbone is not None else 1.0


def param_groups(net: nn.Module, lr: float, scale: float) -> list[dict[str, Any]]:
    """SGD parameter groups, each with its `lr_scale` (training/coreg.py's `set_lr` multiplies by it).

    scale 1 (from scratch): one group, exactly the optimizer runs had before groups existed (so their
    checkpoints still resume); otherwise the backbone at `scale` x the heads' lr and the heads at 1x.
    """
    if scale == 1.0:
        return [{"params": list(net.parameters()), "lr": lr, "lr_scale": 1.0}]
    body = list(net.backbone.parameters())
    ids = {id(p) for p in body}
    heads = [p for p in net.parameters() if id(p) not in ids]
    return [
        {"params": body, "lr": lr * scale, "lr_scale": scale, "name": "backbone"},
        {"params": heads, "lr": lr, "lr_scale": 1.0, "name": "heads"},
    ]


@dataclass(frozen=True)
class Loaded:
    """What a load did, for the log line."""

    source: str
    tensors: int
    dropped: tuple[str, ...]
    adapted: tuple[str, ...]

    def describe(self, num_classes: int | None = None) -> str:
        text = f"pretrained backbone: {self.tensors} tensors from {self.source}"
        if self.dropped:
            shown = ", ".join(self.dropped[:4]) + (", ..." if len(self.dropped) > 4 else "")
            new = f"the {num_classes} classes get" if num_classes else "the classes get"
            text += f"; dropped its head ({shown}): {new} a new one"
        if self.adapted:
            text += f"; adapted {', '.join(self.adapted)} (timm's adapt_input_conv)"
        return text


def architecture_cfg(body: nn.Module, backbone: str) -> dict[str, Any]:
    """timm's pretrained_cfg of the architecture (and tag): what its weights were trained with."""
    cfg = getattr(body, "pretrained_cfg", None)
    if not cfg:
        found = timm.models.get_pretrained_cfg(backbone)
        cfg = found.to_dict() if found is not None else {}
    return dict(cfg)


def check(settings: Any, in_chans: int, num_classes: int | None = None) -> dict | None:
    """Before any image loads: a trial load into a bare backbone, so that a missing or wrong file, missing
    timm weights, no network and `--small-stem` fail at once. Returns the architecture's pretrained_cfg
    (for the preprocessing), None when training from scratch."""
    if settings.pretrained_backbone is None:
        return None
    if settings.small_stem:
        raise UserError(SMALL_STEM_ERROR)
    body = timm_body(settings.backbone, in_chans=in_chans)
    loaded = load_into(body, settings.pretrained_backbone, settings.backbone, in_chans)
    info(loaded.describe(num_classes))
    return architecture_cfg(body, settings.backbone)


def load_into(body: nn.Module, source: str, backbone: str, in_chans: int) -> Loaded:
    """Load `source` (timm or a FILE) into the timm body (built with num_classes=0), in place."""
    cfg = architecture_cfg(body, backbone)
    if source == TIMM:
        state, where = timm_weights(backbone, cfg)
    else:
        state, where = read_checkpoint(source)
    expected = body.state_dict()
    state, dropped = _drop_heads(state, expected, cfg)
    adapted = _adapt_input_conv(state, expected, cfg, in_chans)
    _check_fit(state, expected, source, backbone)
    tensors = len(state)
    for key, value in expected.items():  # BatchNorm counters older checkpoints lack keep the body's own
        state.setdefault(key, value)
    body.load_state_dict(state, strict=True)
    return Loaded(where, tensors, tuple(dropped), tuple(adapted))


# -- reading -----------------------------------------------------------------------------------------------


def read_checkpoint(value: str) -> tuple[dict[str, torch.Tensor], str]:
    """A FILE's tensors: safetensors, or torch.load(weights_only=True; argparse.Namespace allowed) of a
    state_dict or a training checkpoint wrapping one (state_dict_ema, model_ema, state_dict, model: timm's
    order)."""
    option = f"--pretrained-backbone {value}"
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(
            f"{option}: no such checkpoint file (give `timm` for timm's own weights, or a .safetensors, "
            ".pth, .pt or .bin file of the backbone's weights)"
        )
    if path.is_dir():
        raise UserError(f"{option}: is a folder; give the checkpoint file itself")
    where = str(path)
    if path.suffix == ".safetensors":
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean unreadable
            raise UserError(f"{option}: not a safetensors checkpoint ({one_line(exc)})") from exc
    else:
        try:
            # timm's training checkpoints carry their argparse `args`: allowed, as timm's own loader does
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            if found is None:  # not a pickle of tensors at all (text, another format)
                raise UserError(
                    f"{option}: not a checkpoint (neither safetensors nor a PyTorch weights file)"
                ) from exc
            raise UserError(
                f"{option}: holds Python objects other than tensors ({found.group(1)}), so it was not loaded "
                "(weights_only=True); save the model's state_dict() instead (torch.save(model.state_dict(), "
                "FILE) or safetensors)"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - torch.load raises KeyError, RuntimeError, EOFError, ...
            raise UserError(
                f"{option}: not a checkpoint (neither safetensors nor a PyTorch weights file: {one_line(exc)})"
            ) from exc
    if isinstance(obj, dict):
        for key in WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj, where = obj[key], f"{path} ({key})"
                break
    tensors = (
        {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if isinstance(obj, dict)
        else {}
    )
    if not tensors:
        raise UserError(f"{option}: not a checkpoint of weights (it holds no named tensors)")
    return _clean_prefixes(tensors), where


def _clean_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DDP's `module.` and torch.compile's `_orig_mod.` wrappers, as timm's clean_state_dict removes them."""
    out = {}
    for key, value in state.items():
        for prefix in ("_orig_mod.", "module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


@functools.lru_cache(maxsize=4)
def _reachable(host: str) -> bool:
    return network_reachable(host)


def _offline(host: str) -> bool:
    return bool(hub_constants.HF_HUB_OFFLINE) or not _reachable(host)


def timm_weights(backbone: str, cfg: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """timm's pretrained weights of the architecture, from the Hugging Face hub (its cache first) or, for
    the few without a hub copy, timm's URL (torch.hub's cache). Offline with nothing cached: one line, at
    once (huggingface_hub is told it is offline rather than left retrying)."""
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    option = "--pretrained-backbone timm"
    if not (hub_id or url):
        family = backbone.split(".")[0].split("_")[0]
        close = timm.list_pretrained(f"{family}*")[:3]
        hint = f"; {family} models with weights: {', '.join(close)}" if close else ""
        raise UserError(
            f"{option}: timm has no pretrained weights for {backbone}{hint}; pass a checkpoint FILE, "
            "or train from scratch"
        )
    if cfg.get("custom_load") == "hf" or (not hub_id and cfg.get("custom_load")):
        raise UserError(
            f"{option}: timm loads {backbone}'s weights with its own custom loader, which coreg-edge does not "
            "use; save timm.create_model(..., pretrained=True, num_classes=0).state_dict() to a file and pass it"
        )
    if hub_id:
        offline = _offline(urlparse(hub_constants.ENDPOINT).hostname or "huggingface.co")  # HF_ENDPOINT too
        try:
            with hub_offline() if offline else contextlib.nullcontext():
                return timm.models.load_state_dict_from_hf(hub_id, weights_only=True), f"timm ({hub_id})"
        except Exception as exc:  # noqa: BLE001 - huggingface_hub's errors differ by version
            if offline and isinstance(exc, (FileNotFoundError, OSError)):
                raise UserError(
                    f"{option}: no network and timm's weights for {backbone} ({hub_id}) are not in the Hugging "
                    f"Face cache ({hub_constants.HF_HUB_CACHE}); pre-download them on a networked machine "
                    f"(python -c \"import timm; timm.create_model('{backbone}', pretrained=True)\") and copy "
                    "its ~/.cache/huggingface here (or set HF_HOME), or pass a checkpoint FILE"
                ) from exc
            raise UserError(
                f"{option}: cannot get {hub_id} from the Hugging Face hub ({one_line(exc)})"
            ) from exc
    parsed = urlparse(url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(parsed.path).name
    if not cached.is_file() and _offline(parsed.hostname or ""):
        raise UserError(
            f"{option}: no network and timm's weights for {backbone} ({url}) are not in torch.hub's cache "
            f"({cached.parent}); download them on a networked machine and copy the file there, or pass it as FILE"
        )
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=False)
    except Exception as exc:  # noqa: BLE001 - urllib, hash and unpickling errors alike
        raise UserError(f"{option}: cannot get {url} ({one_line(exc)})") from exc
    return _clean_prefixes(state), f"timm ({url})"


# -- fitting -----------------------------------------------------------------------------------------------


def _names(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _drop_heads(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], cfg: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop the checkpoint's classifier keys the backbone (num_classes=0) does not have."""
    heads = _names(cfg.get("classifier"))
    if any(k.startswith("backbone.") for k in state) and not any(k.startswith("backbone.") for k in expected):
        state = {k.removeprefix("backbone."): v for k, v in state.items()}  # a coreg-edge peer file
        heads += RUN_HEADS
    dropped = [k for k in state if k not in expected and any(k == h or k.startswith(h + ".") for h in heads)]
    gone = set(dropped)
    return {k: v for k, v in state.items() if k not in gone}, dropped


def _adapt_input_conv(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], cfg: dict[str, Any], in_chans: int
) -> list[str]:
    """A 3-channel first convolution -> `in_chans` channels (timm's rule for its own weights)."""
    adapted = []
    for name in _names(cfg.get("first_conv")):
        key = f"{name}.weight"
        weight = state.get(key)
        if weight is None or key not in expected or weight.ndim != 4:
            continue
        if weight.shape[1] != expected[key].shape[1] and weight.shape[1] == 3:
            state[key] = adapt_input_conv(in_chans, weight)
            adapted.append(f"{key} from 3 to {in_chans} input channels")
    return adapted


def _check_fit(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str, backbone: str
) -> None:
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
    if wrong:
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3])
        parts.append(f"{len(wrong)} size mismatches, e.g. {shapes}")
    raise UserError(
        f"--pretrained-backbone {source}: these weights do not fit --backbone {backbone} ({'; '.join(parts)})"
    )
