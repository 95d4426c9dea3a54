"""The Co-Reg method's epoch reporting (training/coreg_method.py): one collapse warning per epoch."""

from __future__ import annotations

import warnings


def test_two_collapsed_peers_are_one_warning():
    from coreg_edge.training.coreg_method import warn_collapse

    verdict = {"collapsed": True, "largest_class_share": 0.81}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_collapse(1, {"a": verdict, "b": {**verdict, "largest_class_share": 0.83}})
        warn_collapse(2, {"a": {"collapsed": False, "largest_class_share": 0.2}})
    assert [str(w.message) for w in caught] == [
        "epoch 1: peers a and b predict one class for 81% / 83% of items (collapse); consider a longer --warmup"
    ]
