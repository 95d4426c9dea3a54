"""The synthetic annotator reproduces the protocol's statistics and is seeded."""

import numpy as np

from coreg_edge.annotate.synthetic import synthetic_candidates


def test_statistics_match_protocol_on_large_sample():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 20000)
    cands = synthetic_candidates(labels, 10, partial_rate=0.3, noise_rate=0.2, seed=3)
    assert abs(cands.sum(1).mean() - (1 + 9 * 0.3)) < 0.03
    coverage = cands[np.arange(len(labels)), labels].mean()
    assert abs(coverage - 0.8) < 0.015
    assert cands.any(1).all()


def test_noise_keeps_set_size_and_no_noise_keeps_true_label():
    labels = np.arange(1000) % 5
    clean = synthetic_candidates(labels, 5, 0.2, 0.0, seed=0)
    assert clean[np.arange(1000), labels].all()
    noisy = synthetic_candidates(labels, 5, 0.2, 1.0, seed=0)
    # Same seed, same first draws: noise only moves one member, so sizes are equal row by row.
    assert (noisy.sum(1) == clean.sum(1)).all()
    full = clean.all(1)  # a full set cannot be made noisy
    assert not noisy[np.arange(1000), labels][~full].any()


def test_same_seed_same_sets_other_seed_differs():
    labels = np.arange(500) % 10
    a = synthetic_candidates(labels, 10, 0.3, 0.2, seed=7)
    b = synthetic_candidates(labels, 10, 0.3, 0.2, seed=7)
    c = synthetic_candidates(labels, 10, 0.3, 0.2, seed=8)
    assert (a == b).all() and (a != c).any()
