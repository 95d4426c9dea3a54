"""Label-free scores and peer selection on hand-checked cases."""

import math

import pytest
import torch

from coreg_edge.training.evaluation import accuracy, candidate_scores, select_peer


def test_candidate_scores_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    candidates = torch.tensor([[True, False, False], [True, True, False]])
    scores = candidate_scores(logits, candidates)
    # argmax 0 is in {0}; argmax 2 is not in {0, 1}: hit rate 1/2.
    assert scores["hit_rate"] == pytest.approx(0.5)
    # division loss: -log max_{j in Y} p_j = (-log 0.7 - log 0.3) / 2
    assert scores["division_loss"] == pytest.approx((-math.log(0.7) - math.log(0.3)) / 2, rel=1e-5)
    empty = candidate_scores(torch.zeros((0, 3)), torch.zeros((0, 3), dtype=torch.bool))
    assert math.isnan(empty["hit_rate"])


def test_select_peer_by_hit_rate_then_division_loss():
    scores = {"a": {"hit_rate": 0.8, "division_loss": 0.5}, "b": {"hit_rate": 0.9, "division_loss": 0.9}}
    assert select_peer(scores, "hit_rate")[0] == "b"
    scores["b"]["hit_rate"] = 0.8
    pick, reason = select_peer(scores, "hit_rate")
    assert pick == "a" and "division loss" in reason


def test_select_peer_by_validation_accuracy_first():
    scores = {
        "a": {"hit_rate": 0.9, "division_loss": 0.1, "val_accuracy": 0.7},
        "b": {"hit_rate": 0.5, "division_loss": 0.9, "val_accuracy": 0.8},
    }
    assert select_peer(scores, "val_accuracy")[0] == "b"
    scores["b"]["val_accuracy"] = 0.7  # a tie falls back to the label-free scores
    assert select_peer(scores, "val_accuracy")[0] == "a"


def test_select_peer_without_held_out_items_says_so():
    nan = float("nan")
    scores = {"a": {"hit_rate": nan, "division_loss": nan}, "b": {"hit_rate": nan, "division_loss": nan}}
    pick, reason = select_peer(scores, "hit_rate")
    assert pick == "a" and "no held-out items" in reason


def test_accuracy_is_none_without_ground_truth():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 0])) == 0.5
    assert accuracy(logits, torch.tensor([0, -1])) is None
