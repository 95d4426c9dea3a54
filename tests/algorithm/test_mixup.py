import numpy as np
import pytest
import torch

from coreg_edge.algorithm import mixup, sample_mixup_lambda, sample_permutation


def test_mixup_lambda_at_least_half_and_seeded():
    draws = [sample_mixup_lambda(4.0, np.random.default_rng(0)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    rng = np.random.default_rng(1)
    many = [sample_mixup_lambda(4.0, rng) for _ in range(500)]
    assert min(many) >= 0.5 and max(many) <= 1.0
    assert len(set(many)) > 400  # actually random, not a constant
    again = np.random.default_rng(1)
    assert many == [sample_mixup_lambda(4.0, again) for _ in range(500)]
    with pytest.raises(ValueError):
        sample_mixup_lambda(0.0, rng)


def test_sample_permutation_seeded():
    first = sample_permutation(10, torch.Generator().manual_seed(3))
    second = sample_permutation(10, torch.Generator().manual_seed(3))
    assert torch.equal(first, second) and sorted(first.tolist()) == list(range(10))


def test_mixup_by_hand():
    inputs = torch.tensor([[0.0], [10.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    batch = mixup(inputs, targets, 0.75, torch.tensor([1, 0]))
    assert batch.inputs.tolist() == [[2.5], [7.5]]
    assert batch.targets.tolist() == [[0.75, 0.25], [0.25, 0.75]]
    assert torch.equal(batch.targets_a, targets)
    assert batch.targets_b.tolist() == [[0.0, 1.0], [1.0, 0.0]]
