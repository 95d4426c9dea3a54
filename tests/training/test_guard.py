"""The label-free guard (training/guard.py) and the automatic choices (training/auto.py), on hand-checked
score sequences."""

from __future__ import annotations

import math

import pytest
import torch

from coreg_edge.training import auto
from coreg_edge.training.guard import MAX_ROLLBACKS, BestEpochGuard


def s(hit: float, loss: float = 1.0, shift: float = 0.05) -> dict[str, float]:
    return {"hit_rate": hit, "division_loss": loss, "class_shift": shift}


def test_best_epoch_per_peer_and_tie_break_on_division_loss():
    guard = BestEpochGuard()
    assert guard.observe(0, {"a": s(0.5), "b": s(0.6)}).improved == ["a", "b"]
    assert guard.observe(1, {"a": s(0.7), "b": s(0.6, 2.0)}).improved == ["a"]  # b: equal hit, worse loss
    assert guard.observe(2, {"a": s(0.7, 0.5), "b": s(0.55)}).improved == ["a"]  # a: equal hit, lower loss
    assert (guard.best["a"].epoch, guard.best["b"].epoch) == (2, 0)


def test_a_falling_hit_rate_alone_is_not_failure_a_sharp_fall_twice_is():
    """Outgrowing an instance-dependent annotator lowers the hit rate (0.97 -> 0.87 measured): keep going."""
    guard = BestEpochGuard(act_from=0)
    guard.observe(0, {"a": s(0.97)})
    assert guard.observe(1, {"a": s(0.80)}).action == "continue"
    epoch = 2
    for rollback in range(MAX_ROLLBACKS):
        assert guard.observe(epoch, {"a": s(0.60)}).action == "continue"  # one failing epoch: wait
        decision = guard.observe(epoch + 1, {"a": s(0.60)})
        assert decision.action == "rollback" and decision.peers == ["a"]
        assert "fell from 0.970 (epoch 1) to 0.600 (2 epochs in a row)" in decision.why
        assert guard.lr_scale == pytest.approx(0.5 ** (rollback + 1))
        epoch += 2
    guard.observe(epoch, {"a": s(0.60)})
    assert guard.observe(epoch + 1, {"a": s(0.60)}).action == "stop"
    assert guard.stopped["epoch"] == epoch + 1


def test_one_failing_epoch_that_recovers_is_left_alone():
    guard = BestEpochGuard(act_from=0)
    guard.observe(0, {"a": s(0.8, shift=0.05)})
    assert guard.observe(1, {"a": s(0.8, shift=0.41)}).action == "continue"  # the digits recipe's epoch 16
    assert guard.observe(2, {"a": s(0.8, shift=0.07)}).action == "continue"
    assert guard.observe(3, {"a": s(0.8, shift=0.41)}).action == "continue"  # the count starts again
    assert not guard.events


def test_class_shift_compared_with_the_peers_own_best():
    guard = BestEpochGuard(act_from=0)
    guard.observe(0, {"a": s(0.80, shift=0.20), "b": s(0.80, shift=0.05)})  # a biased annotator: 0.2 is normal
    assert guard.observe(1, {"a": s(0.78, shift=0.30), "b": s(0.78, shift=0.30)}).action == "continue"
    decision = guard.observe(2, {"a": s(0.78, shift=0.30), "b": s(0.79, shift=0.30)})
    assert decision.action == "rollback" and "peer b's predicted classes moved 0.30" in decision.why
    assert "peer a" not in decision.why and decision.peers == ["b"]  # only the failing peer goes back
    assert guard.best["b"].epoch == 0  # a failing epoch is never a best one, whatever its hit rate


def test_no_action_before_act_from_and_nan_scores_ignored():
    guard = BestEpochGuard(act_from=5, patience=1)
    guard.observe(0, {"a": s(0.9)})
    assert guard.observe(1, {"a": s(0.2)}).action == "continue"
    assert guard.observe(6, {"a": s(math.nan)}).action == "continue"
    assert guard.observe(7, {"a": s(0.2)}).action == "rollback"


def test_kept_weights_final_when_healthy_else_best():
    guard = BestEpochGuard()
    guard.observe(3, {"a": s(0.90), "b": s(0.90)})
    kept = guard.kept_weights({"a": 9, "b": 9}, {"a": s(0.80), "b": s(0.50)})
    assert kept["a"]["source"] == "final" and kept["a"]["epoch"] == 9  # lower, but healthy
    assert kept["b"]["source"] == "best" and kept["b"]["epoch"] == 3 and "epoch (4" in kept["b"]["why"]
    guard.stopped = {"epoch": 9, "why": "x"}  # after a stop the best is kept whatever the final scores
    assert guard.kept_weights({"a": 9, "b": 9}, {"a": s(0.89), "b": s(0.9)})["a"]["source"] == "best"


def test_kept_weights_after_a_rollback_in_the_last_epoch_name_the_restored_epoch():
    guard = BestEpochGuard(patience=1)
    guard.observe(0, {"a": s(0.9)})
    assert guard.observe(1, {"a": s(0.5)}).action == "rollback"
    kept = guard.kept_weights({"a": 0}, {"a": s(0.9)})  # the trainer restored epoch 0's weights
    assert kept["a"]["epoch"] == 0 and "best healthy epoch" in kept["a"]["why"]


def test_state_round_trip():
    guard = BestEpochGuard(act_from=2)
    guard.observe(0, {"a": s(0.8)})
    guard.observe(3, {"a": s(0.4)})
    guard.observe(4, {"a": s(0.4)})
    again = BestEpochGuard.from_state(guard.state_dict())
    assert again.state_dict() == guard.state_dict() and again.events


def test_class_shift_score():
    from coreg_edge.training.evaluation import class_shift

    candidates = torch.eye(4, dtype=torch.bool).repeat(25, 1)  # 100 items, 25 per class, singleton sets
    right = torch.eye(4).repeat(25, 1)
    assert class_shift(right, candidates) == pytest.approx(0.0)
    collapsed = torch.zeros(100, 4)
    collapsed[:, 0] = 1
    assert class_shift(collapsed, candidates) == pytest.approx(0.75)
    pairs = candidates | candidates.roll(1, 1)  # sets of two: each class named by half of each set
    assert class_shift(right, pairs) == pytest.approx(0.0)


@pytest.mark.parametrize(("items", "batch"), [(100, 16), (1365, 32), (2600, 64), (50_000, 256), (10**7, 256)])
def test_batch_size_from_data_size(items, batch):
    assert auto.choose_batch_size(items)[0] == batch


def test_lr_rule_and_pretrained_factor():
    assert auto.choose_lr(32, False)[0] == pytest.approx(0.05)
    assert auto.choose_lr(16, False)[0] == pytest.approx(0.025)
    assert auto.choose_lr(256, False)[0] == pytest.approx(auto.MAX_LR)
    assert auto.choose_lr(32, True)[0] == pytest.approx(0.05 * auto.PRETRAINED_LR_FACTOR)


def test_strong_views_by_input_size():
    assert auto.choose_strong_views(8, "randaugment")[0] == "weak"
    assert auto.choose_strong_views(16, "randaugment")[0] == "weak"
    assert auto.choose_strong_views(28, "cutout")[0] == "cutout"
    assert auto.choose_strong_views(224, "randaugment")[0] == "randaugment"


def test_warmup_ends_when_the_score_flattens_within_bounds():
    end = auto.WarmupEnd(low=3, high=8, patience=2, min_gain=0.01)
    rising = [0.3, 0.5, 0.6, 0.7, 0.705, 0.703]
    decided = [end.observe(e, v) for e, v in enumerate(rising)]
    assert decided == [False, False, False, False, False, True] and end.ended == 6
    assert "flattened (0.700 -> 0.705" in end.why
    capped = auto.WarmupEnd(low=2, high=4)
    assert [capped.observe(e, 0.1 * e) for e in range(4)] == [False, False, False, True]
    assert capped.ended == 4 and "most" in capped.why
    early = auto.WarmupEnd(low=4, high=8)
    assert not any(early.observe(e, 0.5) for e in range(3))  # flat, but not before `low`


def test_warmup_bounds_leave_a_coreg_epoch():
    assert auto.warmup_bounds(30) == (6, 15)
    assert auto.warmup_bounds(2) == (1, 1)
    low, high = auto.warmup_bounds(1)
    assert high < low  # no room: TrainSettings refuses such a Co-Reg run
