"""Resume state: everything random or learned, saved atomically every epoch, loaded with weights_only=True."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from coreg_edge.errors import UserError
from coreg_edge.training.context import Context, Peer
from coreg_edge.utils import atomic_path, one_line


def _state(obj: Any) -> Any:
    return None if obj is None else obj.state_dict()


def peer_state(peer: Peer) -> dict[str, Any]:
    """What a peer learned and remembers: the checkpoint keeps it, and every rank must hold the same."""
    return {
        "net": peer.net.state_dict(),
        "optimizer": peer.optimizer.state_dict(),
        "key_net": _state(peer.key_net),
        "queue": _state(peer.queue),
        "table": _state(peer.table),
        "history": _state(peer.history),
        "soft_targets": peer.soft_targets,
    }


def _nothing_to_resume(path: Path) -> UserError:
    return UserError(
        f"{path.parent}: nothing to resume: the run stopped before its first epoch was saved (no "
        f"{path.name}); run the same train command without --resume to start it over"
    )


def checkpoint_bytes(path: str | os.PathLike[str]) -> bytes:
    """The checkpoint file's bytes (rank 0 reads them for every rank of a resumed torchrun run)."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _nothing_to_resume(path) from None
    except OSError as exc:
        raise UserError(f"{path}: unreadable checkpoint ({exc.strerror or exc})") from None


def rank_state(ctx: Context) -> dict[str, Any]:
    """What differs between the ranks of a torchrun run: their augmentation and MixUp draws, torch's RNG."""
    return {"views": ctx.views.state_dict(), "step_generator": ctx.step_generator.get_state(),
            "torch_rng": torch.get_rng_state()}  # fmt: skip


def save_checkpoint(
    path: str | os.PathLike[str], epoch: int, ctx: Context, peers: list[Peer], bank: Any, extra: dict,
    ranks: list[dict[str, Any]] | None = None,
) -> None:  # fmt: skip
    """`ranks` (under torchrun): every rank's rank_state, so that a resume on as many processes continues
    each rank's draws exactly; everything else is rank 0's, the same on every rank."""
    state = {
        "epoch": epoch,
        "peers": {p.name: peer_state(p) for p in peers},
        "bank": _state(bank),
        "views": ctx.views.state_dict(),
        "generator": ctx.generator.get_state(),
        "rng": ctx.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "extra": extra,
    }
    if ranks is not None:
        state["ranks"] = ranks
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: str | os.PathLike[str], ctx: Context, peers: list[Peer], bank: Any, data: bytes | None = None
) -> tuple[int, dict]:
    """Restore in place from `path` (or from `data`, its bytes); returns (completed epochs, extra). A rank the saving run did not have keeps the
    fresh draws of its own seed (a resume on more processes)."""
    path = Path(path)
    try:
        source = path if data is None else io.BytesIO(data)  # `data`: the file's bytes, read by rank 0
        state = torch.load(source, map_location=ctx.device, weights_only=True)
    except FileNotFoundError as exc:
        raise _nothing_to_resume(path) from exc
    except pickle.UnpicklingError as exc:  # never relay PyTorch's advice to load it with weights_only=False
        raise UserError(
            f"{path}: not a checkpoint this program wrote (it holds Python objects other than tensors and "
            "was not loaded)"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({one_line(exc)})") from exc
    for peer in peers:
        saved = state["peers"][peer.name]
        peer.net.load_state_dict(saved["net"])
        peer.optimizer.load_state_dict(saved["optimizer"])
        for name in ("key_net", "queue", "table", "history"):
            target = getattr(peer, name)
            if target is not None and saved[name] is not None:
                target.load_state_dict(saved[name])
        if peer.soft_targets is not None and saved["soft_targets"] is not None:
            peer.soft_targets.copy_(saved["soft_targets"])
    if bank is not None and state["bank"] is not None:
        bank.load_state_dict(state["bank"])
    ctx.generator.set_state(state["generator"].cpu())
    ctx.rng.bit_generator.state = state["rng"]
    ranks, rank = state.get("ranks") or [], ctx.group.rank
    if rank < len(ranks):
        ctx.views.load_state_dict(ranks[rank]["views"])
        if ctx.step_generator is not ctx.generator:
            ctx.step_generator.set_state(ranks[rank]["step_generator"].cpu())
        torch.set_rng_state(ranks[rank]["torch_rng"].cpu())
    elif rank == 0:
        ctx.views.load_state_dict(state["views"])
        torch.set_rng_state(state["torch_rng"].cpu())
    return int(state["epoch"]), dict(state.get("extra") or {})
