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


def test_parity_reads_an_imagefolder_eval_by_its_class_folder_names(tmp_path):
    """`labels --format imagefolder` writes class `cat/dog` as the folder `cat_dog`: parity counts those
    images labelled, each as its own class, as training's --eval does (class_positions)."""
    import numpy as np
    from PIL import Image

    from coreg_edge.classes import class_folders

    names = ["cat/dog", "bird?", "fish"]
    for k, folder in enumerate(class_folders(names)):
        (tmp_path / "eval" / folder).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 40 * k, dtype=np.uint8)).save(tmp_path / "eval" / folder / "x.png")
    config = {**CONFIG, "class_names": names, "eval_data": str(tmp_path / "eval")}
    (part,) = plan_images(config, "run", calibrate=False, parity_images=1).parity
    by_folder = {item.split("/")[0]: int(label) for item, label in zip(part.source.item_ids, part.labels, strict=True)}
    assert by_folder == {"cat_dog": 0, "bird_": 1, "fish": 2}
