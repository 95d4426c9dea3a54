"""The annotation file's own rules: its output name and what a loaded archive may hold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_errors import assert_one_line_error, last_line

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


def _write_npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _valid_arrays(n=4, c=3):
    meta = {"format_version": 1, "class_names": ["a", "b", "c"][:c], "templates": [], "annotator": {},
            "data": {}, "skipped": [], "stats": {}}  # fmt: skip
    return dict(
        candidates=np.eye(n, c, dtype=bool) | (np.arange(c) == 0),
        votes=np.zeros((n, 0), dtype=np.int16),
        zero_shot_probs=np.zeros((n, 0), dtype=np.float32),
        labels=np.zeros(n, dtype=np.int64),
        item_ids=np.asarray([f"x/{i}" for i in range(n)]),
        meta=np.asarray(json.dumps(meta)),
    )


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda a: a.pop("candidates"), "missing candidates"),
        (lambda a: a.update(meta=np.asarray("{not json")), "not valid JSON"),
        (lambda a: a.update(meta=np.asarray(json.dumps({"format_version": 1}))), "meta lacks"),
        (lambda a: a.update(candidates=np.zeros((4, 3), dtype=bool)), "empty candidate set"),
        (lambda a: a.update(labels=np.full(4, 7)), "class index below 3"),
        (lambda a: a.update(item_ids=np.asarray(["x"] * 4)), "not unique"),
        (lambda a: a.update(votes=np.zeros((4, 2), dtype=np.int16)), "meta.voters"),
        (lambda a: a.update(candidates=np.ones((4, 2), dtype=bool)), "class_names has 3"),
        (
            lambda a: a.update(
                meta=np.asarray(json.dumps({**json.loads(str(a["meta"])), "format_version": 99}))
            ),
            "format_version 99",
        ),  # fmt: skip
    ],
)
def test_malformed_annotation_files_are_named(runner, cli, tmp_path, mutate, fragment):
    arrays = _valid_arrays()
    mutate(arrays)
    path = tmp_path / "bad.npz"
    _write_npz(path, **arrays)
    result = runner.invoke(cli, ["info", str(path), "--json"])
    assert_one_line_error(result, fragment)


def test_valid_handmade_file_loads_and_garbage_file_does_not(runner, cli, tmp_path):
    good = tmp_path / "good.npz"
    _write_npz(good, **_valid_arrays())
    assert runner.invoke(cli, ["info", str(good), "--json"]).exit_code == 0
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 truncated")
    assert_one_line_error(runner.invoke(cli, ["info", str(junk)]), "not a readable")
    text = tmp_path / "notes.npz"
    text.write_text("just text")
    result = runner.invoke(cli, ["info", str(text)])
    assert_one_line_error(result, "not an .npz archive")
    assert "allow_pickle" not in result.stderr  # numpy's advice to load unsafely is not passed on


def test_format_version_as_a_string_is_named_as_such(digits_annotation, runner, cli, tmp_path):
    with np.load(digits_annotation) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = "1"
    arrays["meta"] = np.asarray(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    result = runner.invoke(cli, ["info", str(bad)])
    assert result.exit_code == 1
    assert "format_version must be a whole number (got '1', a str)" in last_line(result)


def test_annotate_out_without_npz_suffix_is_refused(runner, cli, tmp_path):
    out = tmp_path / "noext"
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--out", str(out), "-q"])
    assert result.exit_code == 1 and f"did you mean {out}.npz" in last_line(result) and not out.exists()
