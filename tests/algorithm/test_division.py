import pytest
import torch

from coreg_edge.algorithm import (
    LossHistory,
    detect_collapse,
    divide,
    fit_two_component_gmm,
    min_max_normalise,
    safe_partition,
)


def test_min_max_normalise():
    assert min_max_normalise(torch.tensor([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert min_max_normalise(torch.tensor([5.0, 5.0])).tolist() == [0.0, 0.0]


def test_loss_history_averages_last_five_normalised_epochs():
    epochs = [
        [0.0, 1.0, 2.0],  # -> (0, .5, 1)
        [1.0, 1.0, 3.0],  # -> (0, 0, 1)
        [2.0, 0.0, 4.0],  # -> (.5, 0, 1)
        [5.0, 5.0, 5.0],  # -> (0, 0, 0)
        [0.0, 4.0, 1.0],  # -> (0, 1, .25)
        [3.0, 0.0, 1.0],  # -> (1, 0, 1/3)
    ]
    history = LossHistory(num_items=3, history=5)
    with pytest.raises(ValueError):
        history.mean()
    history.push(torch.tensor(epochs[0]))
    history.push(torch.tensor(epochs[1]))
    assert history.mean().tolist() == pytest.approx([0.0, 0.25, 1.0])
    for losses in epochs[2:5]:
        history.push(torch.tensor(losses))
    assert len(history) == 5
    assert history.mean().tolist() == pytest.approx([0.1, 0.3, 0.65])
    history.push(torch.tensor(epochs[5]))  # the first epoch drops out
    assert history.mean().tolist() == pytest.approx([0.3, 0.2, (1 + 1 + 0 + 0.25 + 1 / 3) / 5])

    restored = LossHistory(num_items=3, history=5)
    restored.load_state_dict(history.state_dict())
    assert restored.count == 6 and torch.equal(restored.mean(), history.mean())
    with pytest.raises(ValueError):
        history.push(torch.zeros(4))


def test_gmm_gives_high_w_to_the_low_loss_cluster():
    low = torch.linspace(0.05, 0.15, 40)
    high = torch.linspace(0.85, 0.95, 40)
    losses = torch.cat([high[:20], low, high[20:]])  # interleaved order must not matter
    w = fit_two_component_gmm(losses)
    assert w.dtype == torch.float32 and w.shape == (80,)
    assert (w[20:60] > 0.99).all()
    assert (w[:20] < 0.01).all() and (w[60:] < 0.01).all()
    assert torch.equal(w, fit_two_component_gmm(losses))  # deterministic with the seed
    assert divide(w).sum() == 40


def test_gmm_without_spread_trusts_everything():
    assert fit_two_component_gmm(torch.zeros(5)).tolist() == [1.0] * 5


def test_divide_is_strict():
    assert divide(torch.tensor([0.5, 0.51, 0.2])).tolist() == [False, True, False]
    assert divide(torch.tensor([0.5, 0.51, 0.2]), threshold=0.1).tolist() == [True, True, True]


def test_safe_partition_keeps_p_from_being_tiny():
    w = torch.tensor([0.9, 0.2, 0.3, 0.1])
    assert safe_partition(w).tolist() == [True, False, False, False]  # defaults = divide
    assert safe_partition(w, min_share=0.5).tolist() == [True, False, True, False]
    assert safe_partition(w, min_count=3).tolist() == [True, True, True, False]
    tied = torch.tensor([0.1, 0.1, 0.1])
    assert safe_partition(tied, min_count=2).tolist() == [True, True, False]


def test_detect_collapse():
    report = detect_collapse(torch.tensor([0, 0, 0, 1]), num_classes=3)
    assert report == {
        "largest_class_share": 0.75,
        "largest_class": 0,
        "classes_predicted": 2,
        "collapsed": True,
    }
    healthy = detect_collapse(torch.tensor([0, 1, 2, 1]), num_classes=3)
    assert healthy["collapsed"] is False and healthy["classes_predicted"] == 3
    scores = torch.tensor([[0.1, 0.9], [0.2, 0.8]])
    assert detect_collapse(scores, num_classes=2, max_share=1.0)["collapsed"] is True  # one class only
