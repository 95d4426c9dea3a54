"""Training methods by name, as timm registers models: one row per method, no branch on a method's name.

A `Method` says which networks it trains, whether it uses Co-Reg's machinery (key encoders, queues,
prediction tables, shared prototypes, the class prior, a warm-up) and what one of its epochs is. The
trainer wires data, peers, checkpoints and selection around it. A new method is its epoch function and
one `register_method(Method(...))` call. The built-in rows name their functions as "module:function", so
that listing the methods (the CLI's --method choices) imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.utils import resolve_function


@dataclass(frozen=True)
class EpochInputs:
    """What an epoch function gets: the run's state and this epoch's place in the schedule."""

    ctx: Any  # training.context.Context
    peers: list[Any]  # training.context.Peer, one per name in Method.peers
    settings: Any  # TrainSettings
    schedule: Any  # CoRegSchedule
    bank: Any  # PrototypeBank, or None without co_training
    train_rows: Any  # torch.Tensor of training item indices
    epoch: int
    prior: Any  # the class prior (torch.Tensor) or None


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    run_epoch: str | Callable[[EpochInputs], dict[str, Any]]  # -> the metrics record's phase, loss, ...
    peers: tuple[str, ...] = ("a",)
    co_training: bool = False  # Co-Reg's machinery: key encoders, queues, tables, prototypes, prior, warm-up
    needs_labels: bool = False  # trains on ground truth (an upper bound, not a label-free method)
    init_peer: str | Callable[[Any, Any], None] | None = None  # (ctx, peer), e.g. PRODEN's soft targets
    rank: int = 100  # where it stands in lists (--method choices)

    def epoch(self, inputs: EpochInputs) -> dict[str, Any]:
        return resolve_function(self.run_epoch)(inputs)

    def initialise(self, ctx: Any, peer: Any) -> None:
        if self.init_peer is not None:
            resolve_function(self.init_peer)(ctx, peer)


_BASELINE = "coreg_edge.training.baselines:baseline_phase"
_METHODS: dict[str, Method] = {
    row.name: row
    for row in (
        Method("coreg", "Co-Reg: two networks purify each other's candidate labels (the paper's method)",
               "coreg_edge.training.coreg_method:coreg_phase", peers=("a", "b"), co_training=True, rank=0),
        Method("proden", "PRODEN: own predictions restricted to the candidate set as soft targets", _BASELINE,
               init_peer="coreg_edge.training.baselines:initial_soft_targets", rank=1),
        Method("cc", "classifier-consistent loss: -log of the candidate mass", _BASELINE, rank=2),
        Method("ce-top1", "cross-entropy on the annotator's single best guess (distilling zero-shot)", _BASELINE,
               rank=3),
        Method("supervised", "cross-entropy on the true labels (the upper bound)", _BASELINE, needs_labels=True,
               rank=4),
    )
}  # fmt: skip


def register_method(method: Method) -> Method:
    """Add a method (a name not taken yet); it is then a --method choice and trains through the trainer."""
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is registered already")
    if not method.peers or not set(method.peers) <= {"a", "b"} or len(set(method.peers)) != len(method.peers):
        raise ValueError(f"method {method.name!r}: peers must be ('a',) or ('a', 'b'), got {method.peers}")
    if method.co_training and method.peers != ("a", "b"):
        raise ValueError(f"method {method.name!r}: co_training needs both peers ('a', 'b')")
    _METHODS[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    return tuple(sorted(_METHODS, key=lambda name: (_METHODS[name].rank, name)))


def get_method(name: str) -> Method:
    """The registered method; a one-line error naming the choices otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise UserError(f"--method must be one of {', '.join(method_names())} (got {name!r})") from None
