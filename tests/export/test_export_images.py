"""Calibration and parity images are disjoint, with and without an evaluation split."""

from __future__ import annotations

from coreg_edge.exporters.images import CALIBRATION, EVALUATION, HELD_OUT, plan_images

CONFIG = {
    "class_names": [str(i) for i in range(10)],
    "data": {"source": "builtin", "root": "digits", "split": "train", "channels": 3},
}


def test_evaluation_split_is_the_parity_set():
    plan = plan_images({**CONFIG, "eval_data": "digits:test"}, "run", calibration_images=100)
    assert [part.role for part in plan.parity] == [EVALUATION]
    assert plan.num_parity == 360 and len(plan.calibration) == 100
    assert plan.calibration.role == CALIBRATION and plan.disjoint


def test_without_evaluation_split_a_held_out_slice_never_calibrates():
    plan = plan_images(CONFIG, "run", calibration_images=5000, parity_images=300)
    (held,) = plan.parity
    assert held.role == HELD_OUT and len(held) == 300
    assert len(plan.calibration) == 1437 - 300  # everything else, capped by what exists
    assert not set(held.indices) & set(plan.calibration.indices)
    assert (held.labels >= 0).all()
    again = plan_images(CONFIG, "run", calibration_images=10, parity_images=300)
    assert list(again.parity[0].indices) == list(held.indices)  # --check-only finds the same images


def test_fp32_parity_does_not_need_the_training_data(tmp_path):
    import pytest

    from coreg_edge.errors import UserError

    moved = {
        **CONFIG,
        "data": {"source": "folder", "root": str(tmp_path / "gone"), "split": None, "channels": 3},
    }
    plan = plan_images({**moved, "eval_data": "digits:test"}, "run", calibrate=False)
    assert plan.calibration is None and plan.num_parity == 360 and plan.disjoint
    with pytest.raises(UserError, match="gone"):
        plan_images({**moved, "eval_data": "digits:test"}, "run", calibrate=True)
