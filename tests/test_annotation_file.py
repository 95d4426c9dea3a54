"""The annotation file's own rules: its output name and what a loaded archive may hold."""

from __future__ import annotations

import numpy as np
import pytest

from coreg_edge.annotation_file import AnnotationFormatError, check_output_name, load
from coreg_edge.errors import UserError


def test_an_existing_annotation_file_is_never_replaced(tmp_path):
    out = tmp_path / "ann.npz"
    out.write_bytes(b"hours of CLIP votes")
    with pytest.raises(UserError, match="exists; choose a new name, or delete it first"):
        check_output_name(out)
    check_output_name(out, overwrite=True)  # the pipeline's own file
    with pytest.raises(UserError, match="is a folder"):
        (tmp_path / "dir.npz").mkdir()
        check_output_name(tmp_path / "dir.npz")
    assert out.read_bytes() == b"hours of CLIP votes"


def test_annotate_refuses_an_existing_out_before_any_work(runner, cli, tmp_path):
    out = tmp_path / "ann.npz"
    out.write_bytes(b"earlier")
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--out", str(out)])
    assert result.exit_code == 1 and "exists; choose a new name" in result.stderr.strip().splitlines()[-1]
    assert out.read_bytes() == b"earlier"


def test_a_pickled_object_array_is_named_not_called_a_non_archive(tmp_path):
    path = tmp_path / "evil.npz"
    arrays = {key: np.zeros(2) for key in ("candidates", "votes", "zero_shot_probs", "labels", "meta")}
    np.savez(path, item_ids=np.array([{"x": 1}, None], dtype=object), **arrays)
    with pytest.raises(AnnotationFormatError, match="'item_ids' array holds pickled Python objects"):
        load(path)
    plain = tmp_path / "text.npz"
    plain.write_text("not an archive")
    with pytest.raises(AnnotationFormatError, match="not an .npz archive"):
        load(plain)
