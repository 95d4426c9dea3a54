import math

import pytest
import torch

from coreg_edge.algorithm import (
    cc_loss,
    division_losses,
    initial_proden_targets,
    negative_entropy,
    partial_cross_entropy,
    probability_mse,
    proden_loss,
    self_training_loss,
    soft_cross_entropy,
    update_proden_targets,
    warmup_loss,
)


def logits_of(*rows):
    """Logits whose softmax is exactly the given probability rows."""
    return torch.tensor(rows, dtype=torch.float64).log()


def test_warmup_loss_by_hand():
    logits = logits_of([0.5, 0.3, 0.2], [0.2, 0.3, 0.5])
    candidates = torch.tensor([[True, True, False], [True, True, True]])
    # partial CE: item 0 only (item 1's set is every class): -log(0.8 + 1e-5) = 0.2231310514
    # sum p log p: 0.5 ln .5 + 0.3 ln .3 + 0.2 ln .2 = -1.0296530141 for both rows
    assert float(partial_cross_entropy(logits, candidates)) == pytest.approx(0.2231310514)
    assert float(negative_entropy(logits)) == pytest.approx(-1.0296530141)
    assert float(warmup_loss(logits, candidates)) == pytest.approx(-0.8065219627)
    assert float(warmup_loss(logits, candidates, entropy_weight=0.0)) == pytest.approx(0.2231310514)


def test_partial_ce_full_sets_skipped_or_counted():
    logits = logits_of([0.2, 0.3, 0.5]).requires_grad_()
    full = torch.ones(1, 3, dtype=torch.bool)
    loss = partial_cross_entropy(logits, full)
    assert loss.item() == 0.0
    loss.backward()  # still a graph, so the trainer can always call backward
    counted = partial_cross_entropy(logits, full, skip_full_sets=False)
    assert counted.item() == pytest.approx(-math.log(1 + 1e-5))


def test_division_losses_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    candidates = torch.tensor([[False, True, True], [True, False, False]])
    assert division_losses(probs, candidates).tolist() == pytest.approx([1.2039728, 2.3025851])
    zero = division_losses(torch.tensor([[1.0, 0.0]]), torch.tensor([[False, True]]))
    assert torch.isfinite(zero).all() and float(zero) > 80  # large, not inf


def test_soft_cross_entropy_and_mse_by_hand():
    logits = logits_of([0.5, 0.25, 0.25])
    # -(0.5 ln 0.5 + 0.5 ln 0.25) = 1.0397208
    assert float(soft_cross_entropy(logits, torch.tensor([[0.5, 0.5, 0.0]]))) == pytest.approx(1.0397208)
    # softmax(0) = 1/3 each vs (1, 0, 0): ((2/3)^2 + 2 (1/3)^2) / 3 = 6/27
    mse = probability_mse(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]))
    assert float(mse) == pytest.approx(6 / 27)


def test_self_training_loss_by_hand():
    logits_p = logits_of([0.5, 0.25, 0.25])
    targets_p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    logits_u = torch.zeros(1, 3, dtype=torch.float64)
    targets_u = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    # -ln 0.5 + 0.5 * 6/27 = 0.8042583
    loss = self_training_loss(logits_p, targets_p, logits_u, targets_u, lambda_u=0.5)
    assert float(loss) == pytest.approx(0.8042583)
    assert float(self_training_loss(logits_p, targets_p, logits_u, targets_u, 0.0)) == pytest.approx(
        math.log(2)
    )


def test_self_training_loss_empty_u_is_zero_not_nan():
    logits_p = logits_of([0.5, 0.25, 0.25])
    targets_p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    empty = torch.zeros(0, 3, dtype=torch.float64)
    assert float(self_training_loss(logits_p, targets_p, empty, empty, 1.0)) == pytest.approx(math.log(2))


def test_cc_loss_by_hand():
    logits = logits_of([0.5, 0.3, 0.2], [0.2, 0.3, 0.5])
    candidates = torch.tensor([[True, True, False], [False, False, True]])
    # mean(-ln 0.8, -ln 0.5) = mean(0.2231436, 0.6931472)
    assert float(cc_loss(logits, candidates)) == pytest.approx(0.4581454)


def test_proden_targets_and_loss():
    candidates = torch.tensor([[True, False, True], [True, True, False]])
    assert initial_proden_targets(candidates).tolist() == [[0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], requires_grad=True)
    updated = update_proden_targets(probs, candidates)
    assert not updated.requires_grad
    assert updated[0].tolist() == pytest.approx([5 / 7, 0.0, 2 / 7])
    assert updated[1].tolist() == [0.625, 0.375, 0.0]
    logits = logits_of([0.5, 0.25, 0.25])
    assert float(proden_loss(logits, torch.tensor([[0.5, 0.5, 0.0]]))) == pytest.approx(1.0397208)
