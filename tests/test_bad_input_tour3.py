"""Regression tests for the third bad-input tour (labels, review, classes tables, examples, options)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from coreg_edge.annotate import annotate
from coreg_edge.annotate.classes import parse_classes
from coreg_edge.errors import UserError


def _one_line(result, code: int, fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0], lines
    assert "unexpected" not in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "x.npz", "--out", "r", "--epochs", "x"],
        ["train", "x.npz", "--out", "r", "--cache", "bogus"],
        ["bench", "m.onnx", "--batch-sizes", "0,x"],
        ["labels", "x", "--out", "o", "--format", "xml"],
        ["train", "x.npz"],
    ],
)
def test_usage_errors_are_one_line(runner, cli, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--help" in lines[0], lines


def test_a_bare_command_still_shows_its_help(runner, cli):
    result = runner.invoke(cli, [])
    assert "Usage:" in result.output and "Commands:" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["annotate", "digits", "--annotator", "simulated", "--feature-size", "100000", "--out", "x.npz"],
         "--feature-size must be a whole number within [1, 256]"),
        (["annotate", "digits", "--annotator", "simulated", "--feature-size", "99999999999999999999", "--out", "x.npz"],
         "--feature-size must be"),
        (["train", "x.npz", "--out", "r", "--epochs", "99999999999999999999"], "--epochs must be a whole number"),
        (["review", "run", "--out", "r", "--thumbnail", "100000"], "--thumbnail must be a whole number within [16, 1024]"),
    ],
)  # fmt: skip
def test_huge_values_are_one_line_before_any_work(runner, cli, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line(runner.invoke(cli, args), 2, fragment)


def test_classes_files_are_read_forgivingly_and_refused_clearly(tmp_path):
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(UserError, match=r"not UTF-8 text"):
        parse_classes(str(tmp_path / "bin.toml"))
    (tmp_path / "bom.txt").write_bytes("\ufeffcat\ndog\n".encode())
    assert parse_classes(str(tmp_path / "bom.txt"))[0] == ["cat", "dog"]
    (tmp_path / "upper.TOML").write_text('cat = "kitty"\ndog = "dog"\n')
    assert parse_classes(str(tmp_path / "upper.TOML"))[1] == {"cat": ["kitty"], "dog": ["dog"]}
    for name, text, fragment in [
        ("dup.json", '{"cat": "a", "cat": "b", "dog": "d"}', "class 'cat' is given twice"),
        ("space.json", '{"cat": "a", " cat": "b", "dog": "d"}', "class 'cat' is given twice"),
        ("shared.toml", 'cat = "pet"\ndog = "pet"\n', "the name 'pet' is given to both 'cat' and 'dog'"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=fragment):
            parse_classes(str(tmp_path / name))
    (tmp_path / "bad.toml").write_text("cat = [\n")
    with pytest.raises(UserError) as info:
        parse_classes(str(tmp_path / "bad.toml"))
    assert str(info.value).count("not valid TOML") == 1


def test_classes_that_share_a_folder_name_are_refused_and_folder_names_read_back(runner, cli, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(flat / f"{i}.png")
    ann = tmp_path / "a.npz"
    labels = np.array([0, 1, 2, 0, 1, 2])
    from coreg_edge.annotation_file import Annotation
    from coreg_edge.data import open_source

    candidates = np.eye(3, dtype=bool)[labels]  # single-candidate sets: labels without an annotator

    source = open_source(str(flat))
    Annotation(candidates=candidates, labels=np.full(6, -1), item_ids=source.item_ids, class_names=["a/b", "a_b", "c:d"],
               data=source.describe()).save(ann)  # fmt: skip
    result = runner.invoke(cli, ["labels", str(ann), "--format", "imagefolder", "--out", str(tmp_path / "o")])
    _one_line(result, 1, "classes 'a/b' and 'a_b' both become the folder 'a_b'")
    # a class whose folder name differs from its name ('c:d' -> 'c_d') is read back as that class by --val
    from coreg_edge.training.data import load_eval_set, preprocess_for

    val = tmp_path / "val"
    (val / "c_d").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(val / "c_d" / "x.png")
    split = load_eval_set(str(val), ["a/b", "c:d"], preprocess_for(source, 8, 3), __import__("torch").device("cpu"))
    assert split.labels.tolist() == [1]


def test_other_annotators_options_are_named_in_a_warning(runner, cli, tmp_path):
    out = tmp_path / "s.npz"
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--examples", "missing",
                                 "--templates", "none", "--out", str(out), "-q"])  # fmt: skip
    assert result.exit_code == 0 and out.exists()
    assert "Warning: the synthetic annotator ignores --examples, --templates" in result.stderr


def test_examples_inside_data_are_refused(tmp_path, class_folder):
    with pytest.raises(UserError, match="overlaps DATA"):
        annotate(str(class_folder), annotator="simulated", examples=str(class_folder), shots=1, quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^--examples .*no images found"):
        annotate("digits", annotator="simulated", examples=str(tmp_path / "empty"), quiet=True)


def test_labels_check_where_the_images_are_in_every_format(runner, cli, tmp_path, class_folder):
    ann = tmp_path / "a.npz"
    annotate(str(class_folder), ann, annotator="simulated", shots=1, quiet=True)
    result = runner.invoke(cli, ["labels", str(ann), "--data", "digits", "--out", str(tmp_path / "o")])
    _one_line(result, 1, "are not in")


def test_labels_of_a_run_whose_annotation_changed_are_refused(runner, cli, digits_annotation, tmp_path):
    ann = tmp_path / "d.npz"
    shutil.copy(digits_annotation, ann)
    run = tmp_path / "run"
    args = ["train", str(ann), "--out", str(run), "--method", "supervised", "--epochs", "1",
            "--backbone", "test_resnet", "--image-size", "8", "-q"]  # fmt: skip
    assert runner.invoke(cli, args).exit_code == 0
    hint = runner.invoke(cli, ["labels", str(run), "--peer", "ensemble", "--out", str(tmp_path / "o2")])
    assert hint.exit_code == 1 and "use --peer a instead" in hint.stderr and "export --peer" not in hint.stderr
    other = tmp_path / "other.npz"
    annotate("digits", other, annotator="synthetic", classes=[f"c{i}" for i in range(10)], quiet=True)
    shutil.copy(other, ann)  # the annotation file was replaced by one of other classes
    _one_line(runner.invoke(cli, ["labels", str(run), "--out", str(tmp_path / "o")]), 1, "the annotation file changed")
    assert json.loads((run / "config.json").read_text())["method"] == "supervised"
