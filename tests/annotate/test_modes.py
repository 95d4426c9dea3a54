"""Candidate-set modes on fixed, hand-computed inputs."""

import numpy as np
import pytest

from coreg_edge.annotate.modes import candidate_sets, ratio, topk, union_top1


def test_union_top1_is_union_of_votes():
    votes = np.array([[0, 0, 2], [1, 1, 1]], dtype=np.int16)
    expected = np.array([[True, False, True, False], [False, True, False, False]])
    assert (union_top1(votes, 4) == expected).all()


def test_topk_on_fixed_probabilities():
    probs = np.array([[0.1, 0.5, 0.3, 0.1], [0.4, 0.1, 0.1, 0.4]])
    # Row 2 ties 0.4/0.4 at classes 0 and 3: both in for k=2.
    assert (topk(probs, 2) == [[False, True, True, False], [True, False, False, True]]).all()
    assert (topk(probs, 1) == [[False, True, False, False], [True, False, False, False]]).all()
    assert topk(probs, 10).all()  # k larger than C keeps every class


def test_ratio_keeps_classes_within_ratio_of_top_among_top_k():
    probs = np.array([[0.50, 0.26, 0.24, 0.0], [0.9, 0.05, 0.05, 0.0]])
    # 0.5 * 0.50 = 0.25 -> classes 0 (0.50) and 1 (0.26) pass, class 2 (0.24) does not.
    assert (ratio(probs, 0.5, k=5) == [[True, True, False, False], [True, False, False, False]]).all()
    # k=1 restricts to the top class whatever the ratio.
    assert (ratio(probs, 0.01, k=1) == [[True, False, False, False], [True, False, False, False]]).all()


def test_dispatch_and_unknown_mode():
    probs = np.array([[0.2, 0.8]])
    votes = np.array([[1, 0]], dtype=np.int16)
    assert candidate_sets("union-top1", votes=votes, probs=probs).tolist() == [[True, True]]
    assert candidate_sets("topk", votes=votes, probs=probs, k=1).tolist() == [[False, True]]
    with pytest.raises(ValueError):
        candidate_sets("kd", votes=votes, probs=probs)
