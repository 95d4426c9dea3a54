import pytest
import torch

from coreg_edge.algorithm import PredictionTable, align_distribution, estimate_prior_from_votes


def test_align_distribution_uniform_prior_by_hand():
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    mean = torch.tensor([0.5, 0.25, 0.25])
    # p * (1/3) / mean = (0.4, 0.4, 0.1333), renormalised = (3/7, 3/7, 1/7)
    assert align_distribution(probs, mean).tolist() == [pytest.approx([3 / 7, 3 / 7, 1 / 7])]


def test_align_distribution_prior_equal_to_mean_is_identity():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    mean = torch.tensor([0.5, 0.25, 0.25])
    assert torch.allclose(align_distribution(probs, mean, prior=mean.clone()), probs)


def test_prediction_table_starts_uniform_and_updates_by_item():
    table = PredictionTable(num_items=3, num_classes=2)
    assert table.mean().tolist() == [0.5, 0.5]
    table.update(torch.tensor([1]), torch.tensor([[1.0, 0.0]]))
    assert table.mean().tolist() == pytest.approx([2 / 3, 1 / 3])
    # Over chosen rows only (held-out rows stay uniform and must not dilute the mean).
    assert table.mean(torch.tensor([1])).tolist() == [1.0, 0.0]
    other = PredictionTable(3, 2)
    other.load_state_dict(table.state_dict())
    assert torch.equal(other.table, table.table)


def test_tracked_mean_is_the_running_sum_of_the_tracked_rows_by_hand():
    table = PredictionTable(num_items=4, num_classes=2)
    table.track(torch.tensor([0, 2]))
    assert table.tracked_mean().tolist() == [0.5, 0.5]
    table.update(torch.tensor([2, 3]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # row 3 is not tracked
    assert table.tracked_mean().tolist() == [0.75, 0.25]  # rows 0 (0.5, 0.5) and 2 (1, 0)
    table.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    assert table.tracked_mean().tolist() == [0.5, 0.5]


def test_tracked_mean_follows_many_updates_and_is_refreshed_by_track():
    gen = torch.Generator().manual_seed(0)
    table = PredictionTable(num_items=500, num_classes=7)
    rows = torch.randperm(500, generator=gen)[:400]
    table.track(rows)
    for _ in range(200):
        ids = torch.randperm(500, generator=gen)[:64]
        table.update(ids, torch.rand(64, 7, generator=gen).softmax(1))
        assert torch.allclose(table.tracked_mean(), table.mean(rows), atol=1e-6)
    other = PredictionTable(500, 7)
    other.load_state_dict(table.state_dict())
    with pytest.raises(RuntimeError):  # a loaded table tracks nothing until track() sums it afresh
        other.tracked_mean()
    other.track(rows)
    assert torch.allclose(other.tracked_mean(), table.mean(rows), atol=1e-6)


def test_estimate_prior_from_votes_by_hand():
    votes = torch.tensor([[0, 0, 1], [0, 2, 0]], dtype=torch.int16)
    # shares (4/6, 1/6, 1/6); ** 0.5 and renormalised = (0.5, 0.25, 0.25)
    assert estimate_prior_from_votes(votes, 3).tolist() == pytest.approx([4 / 6, 1 / 6, 1 / 6])
    assert estimate_prior_from_votes(votes, 3, temperature=0.5).tolist() == pytest.approx([0.5, 0.25, 0.25])


def test_estimate_prior_floor_and_errors():
    prior = estimate_prior_from_votes(torch.tensor([[0, 0]]), 2)
    assert float(prior[1]) > 0 and float(prior.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        estimate_prior_from_votes(torch.zeros((4, 0), dtype=torch.int16), 3)
    with pytest.raises(ValueError):
        estimate_prior_from_votes(torch.tensor([[5]]), 3)
