import pytest
import torch

from coreg_edge.algorithm import co_pseudo_labels_p, co_pseudo_labels_u, restrict_to_candidates, sharpen


def test_sharpen_by_hand():
    # (0.36, 0.09, 0.01) / 0.46
    assert sharpen(torch.tensor([[0.6, 0.3, 0.1]]), 0.5).tolist() == [
        pytest.approx([0.7826087, 0.1956522, 0.0217391], abs=1e-6)
    ]
    assert sharpen(torch.tensor([[0.6, 0.3, 0.1]]), 1.0).tolist() == [pytest.approx([0.6, 0.3, 0.1])]
    with pytest.raises(ValueError):
        sharpen(torch.ones(1, 2), 0.0)


def test_restrict_to_candidates_and_fallback():
    probs = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    candidates = torch.tensor([[False, True, True], [False, True, True]])
    restricted = restrict_to_candidates(probs, candidates)
    assert restricted.tolist() == [pytest.approx([0.0, 0.6, 0.4]), [0.0, 0.5, 0.5]]


def test_co_pseudo_labels_p_by_hand():
    w = torch.tensor([0.5, 1.0])
    peer = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    own = [torch.tensor([[0.2, 0.6, 0.2], [0.2, 0.6, 0.2]]), torch.tensor([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])]
    targets = co_pseudo_labels_p(w, peer, own, temperature=0.5)
    # row 0: 0.5 * (1, 0, 0) + 0.5 * (0.3, 0.5, 0.2) = (0.65, 0.25, 0.1); squared / 0.495
    assert targets[0].tolist() == pytest.approx([0.8535354, 0.1262626, 0.0202020], abs=1e-6)
    # row 1: w = 1 keeps only the peer's part
    assert targets[1].tolist() == [0.0, 1.0, 0.0]


def test_co_pseudo_labels_u_by_hand():
    probs = [
        torch.tensor([[0.6, 0.4]]),
        torch.tensor([[0.8, 0.2]]),
        torch.tensor([[0.4, 0.6]]),
        torch.tensor([[0.6, 0.4]]),
    ]
    # mean (0.6, 0.4); squared (0.36, 0.16) / 0.52
    assert co_pseudo_labels_u(probs, 0.5).tolist() == [pytest.approx([0.6923077, 0.3076923], abs=1e-6)]
    with pytest.raises(ValueError):
        co_pseudo_labels_u([])
