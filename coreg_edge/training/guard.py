"""Never end below your own best epoch: label-free bookkeeping of each peer's best healthy epoch, and what to
do when training fails (docs/ALGORITHM.md#keeping-the-best-epoch).

Every epoch scores each peer without ground truth: on held-out annotated items the hit rate (the share of
predictions inside the candidate sets; division loss as tie-break), and the class shift (the total variation
between the predicted class shares and the candidate sets' own, on those items and a few hundred training
items). An epoch is *failing* when its class shift rose CLASS_SHIFT_RISE above the shift of the peer's best
epoch (predictions piled onto a few classes: the collapse that took digits from 0.81 to 0.31) or its hit rate
fell SHARP_FALL below the peer's best. The shift is compared with the peer's own: a biased annotator's class
shares differ from the true ones (0.15-0.22 for healthy networks on the simulated `hard` digits, 0.05 on
uniform noise), a collapse adds 0.3 and more within an epoch or two. A falling hit rate alone is not a failure: a network that outgrows its annotator's instance-dependent
mistakes disagrees with more held-out candidate sets (measured on the simulated `hard` digits: the warm-up
fitted 97% of the held-out sets at 0.75 test accuracy, Co-Reg 87% at 0.81).

`BestEpochGuard.observe` turns one epoch's scores into decisions, as plain data the trainer acts on:
- `improved`: peers with a new best healthy epoch, whose weights the trainer keeps a copy of;
- `action`: "continue", "rollback" (a peer failed PATIENCE epochs in a row: that peer goes back to its best
  weights and the learning rate is halved; at most MAX_ROLLBACKS times) or "stop" (once more: training ends
  and keeps the best weights). One failing epoch is not acted on: the first Co-Reg epoch often shifts a
  peer's classes for one epoch and recovers (measured on the digits recipe: 0.36, then 0.07). Before
  `act_from` (the end of Co-Reg's warm-up, or a fifth of a baseline's epochs) scores still rise and wobble,
  and the guard only records the best epochs.
At the end `kept_weights` ships each peer's current weights unless they are failing or training stopped;
then its best healthy epoch's. A rollback restores a network's weights only, not the method's memories
(prediction tables, loss history, queues, prototypes), which follow the restored network within epochs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

CLASS_SHIFT_RISE = 0.2  # above the best epoch's class shift: predictions are piling onto a few classes
SHARP_FALL = 0.30  # hit-rate fall below a peer's best that is failure whatever the class shares
LR_FACTOR = 0.5  # the learning rate after a rollback
MAX_ROLLBACKS = 2
PATIENCE = 2  # failing epochs in a row before the guard acts


@dataclass
class Best:
    epoch: int
    hit_rate: float
    division_loss: float
    class_shift: float = 0.0

    def beaten_by(self, hit_rate: float, division_loss: float) -> bool:
        if hit_rate > self.hit_rate + 1e-9:
            return True
        return abs(hit_rate - self.hit_rate) <= 1e-9 and division_loss < self.division_loss


@dataclass
class Decision:
    improved: list[str]
    action: str  # continue | rollback | stop
    why: str = ""
    peers: list[str] = field(default_factory=list)  # the failing peers (rolled back)


@dataclass
class BestEpochGuard:
    class_shift_rise: float = CLASS_SHIFT_RISE
    sharp_fall: float = SHARP_FALL
    act_from: int = 0  # first epoch at which failing epochs lead to a rollback or a stop
    patience: int = PATIENCE
    best: dict[str, Best] = field(default_factory=dict)
    strikes: dict[str, int] = field(default_factory=dict)  # failing epochs in a row, per peer
    lr_scale: float = 1.0
    events: list[dict[str, Any]] = field(default_factory=list)
    stopped: dict[str, Any] | None = None

    def failure(self, peer: str, score: dict[str, float]) -> str | None:
        """Why this peer's epoch is failing, or None when it is healthy."""
        best = self.best.get(peer)
        if best is None:
            return None
        shift = score.get("class_shift", 0.0)
        if shift == shift and shift - best.class_shift >= self.class_shift_rise:
            return (f"peer {peer}'s predicted classes moved {shift:.2f} from the annotator's (collapse; "
                    f"{best.class_shift:.2f} at its best epoch {best.epoch + 1})")  # fmt: skip
        if best.hit_rate - score["hit_rate"] >= self.sharp_fall:
            return (f"peer {peer}'s held-out hit rate fell from {best.hit_rate:.3f} (epoch {best.epoch + 1}) to "
                    f"{score['hit_rate']:.3f}")  # fmt: skip
        return None

    def observe(self, epoch: int, scores: dict[str, dict[str, float]]) -> Decision:
        """One epoch's label-free scores per peer ({"a": {"hit_rate", "division_loss", "class_shift"}, ...};
        NaN hit rates when nothing is held out) -> what to keep and what to do."""
        improved, failures, failing = [], [], []
        for peer, score in scores.items():
            if math.isnan(score["hit_rate"]):
                continue
            why = self.failure(peer, score)
            if why is not None:
                self.strikes[peer] = self.strikes.get(peer, 0) + 1
                if self.strikes[peer] >= self.patience:
                    failures.append(f"{why} ({self.strikes[peer]} epochs in a row)")
                    failing.append(peer)
                continue
            self.strikes[peer] = 0
            best = self.best.get(peer)
            if best is None or best.beaten_by(score["hit_rate"], score["division_loss"]):
                self.best[peer] = Best(epoch, score["hit_rate"], score["division_loss"], score.get("class_shift", 0.0))
                improved.append(peer)
        if not failures or epoch < self.act_from:
            return Decision(improved, "continue")
        why = "; ".join(failures)
        rollbacks = sum(e["action"] == "rollback" for e in self.events)
        action = "stop" if rollbacks >= MAX_ROLLBACKS else "rollback"
        if action == "rollback":
            self.lr_scale *= LR_FACTOR
            for peer in failing:
                self.strikes[peer] = 0
        self.events.append(
            {"epoch": epoch, "action": action, "why": why, "lr_scale": self.lr_scale, "peers": failing}
        )
        if action == "stop":
            self.stopped = {"epoch": epoch, "why": why}
        return Decision(improved, action, why, failing)

    def kept_weights(
        self, weights_epochs: dict[str, int], final: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, Any]]:
        """Per peer: {"epoch", "source": "final" | "best", "why"} for the weights that are shipped, given the
        epoch each peer's current weights come from (the last one, or its best after a rollback) and their
        scores."""
        kept: dict[str, dict[str, Any]] = {}
        for peer, score in final.items():
            best, current = self.best.get(peer), weights_epochs[peer]
            failing = None if math.isnan(score["hit_rate"]) else self.failure(peer, score)
            if best is None or best.epoch == current or (failing is None and self.stopped is None):
                why = "the last weights are healthy" if best else "no held-out items to score them"
                if best is not None and best.epoch == current:
                    why = "the last weights are its best healthy epoch's"
                kept[peer] = {"epoch": current, "source": "final", "why": why}
            else:
                cause = f"training stopped early ({self.stopped['why']})" if self.stopped else failing
                kept[peer] = {"epoch": best.epoch, "source": "best", "why": (
                    f"its best healthy epoch ({best.epoch + 1}, held-out hit rate {best.hit_rate:.3f}); {cause}")}  # fmt: skip
        return kept

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)  # plain data (Best rows as dicts): the checkpoint loads it with weights_only=True

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BestEpochGuard:
        return cls(**{**state, "best": {k: Best(**v) for k, v in state["best"].items()}})
