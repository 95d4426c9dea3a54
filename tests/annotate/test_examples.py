"""Example images as class definitions (#12 item 2): each class's mean example votes beside the templates."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from coreg_edge.annotate import annotate
from coreg_edge.annotate.examples import VOTER, class_means, nearest_mean_votes
from coreg_edge.annotation_file import load
from coreg_edge.data import open_source
from coreg_edge.errors import UserError


def write_examples(folder, per_class: int, classes=range(10), split: str = "digits:test"):
    """`per_class` digits of each class from the test split (never training items), as PNG files."""
    source = open_source(split)
    for c in classes:
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(source.labels == c)[:per_class]:
            source.load(int(i)).save(folder / str(c) / f"{i}.png")
    return folder


def test_nearest_class_mean_by_hand():
    features = np.array([[0.0, 0.0], [10.0, 0.0], [4.0, 0.0], [6.0, 0.0]])
    classes = np.array([0, 1, 1])
    examples = np.array([[0.0, 0.0], [9.0, 0.0], [11.0, 0.0]])
    means = class_means(examples, classes, 3)
    assert np.allclose(means[:2], [[0, 0], [10, 0]]) and np.isnan(means[2]).all()  # class 2: no examples
    assert nearest_mean_votes(features, means).tolist() == [0, 1, 0, 1]  # 4 is nearer 0, 6 nearer 10
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert nearest_mean_votes(unit, np.array([[2.0, 0.0], [0.0, 3.0]]), "cosine").tolist() == [0, 1, 1]


def test_the_simulator_adds_one_voter_whose_vote_is_always_in_the_set(tmp_path):
    examples = write_examples(tmp_path / "examples", 5)
    plain = annotate("digits", annotator="simulated", preset="hard", quiet=True)
    with_examples = annotate("digits", annotator="simulated", preset="hard", examples=str(examples), quiet=True)
    assert with_examples.voters == [*plain.voters, VOTER]
    assert np.array_equal(with_examples.votes[:, :-1], plain.votes)  # the templates' votes are untouched
    column = with_examples.votes[:, -1]
    assert with_examples.candidates[np.arange(len(column)), column].all()
    assert (with_examples.candidates >= plain.candidates).all()  # only adds candidates
    assert with_examples.annotator["examples"]["per_class"] == {str(c): 5 for c in range(10)}
    accuracy = (column == with_examples.labels).mean()
    assert accuracy > 0.5  # a nearest-mean classifier on 5 examples per class of 8 px digits


def test_clip_examples_alone_or_with_templates_and_a_warning_for_classes_without_examples(tiny_clip, class_folder, tmp_path):
    config, checkpoint = tiny_clip
    examples = tmp_path / "examples"
    for name in ("bird", "cat"):  # a subset of the classes is enough
        (examples / name).mkdir(parents=True)
        Image.new("RGB", (20, 20), (40, 200, 90) if name == "cat" else (200, 30, 30)).save(examples / name / "a.png")
    common = {"clip_model": str(config), "pretrained": str(checkpoint), "quiet": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with templates voting too, a class without examples is no problem
        both = annotate(str(class_folder), templates="imagenet", examples=str(examples), **common)
    assert both.voters[-1] == VOTER and both.votes.shape[1] == 81
    assert set(np.unique(both.votes[:, -1])) <= {0, 1}  # bird and cat only: dog has no examples
    assert both.candidates[np.arange(both.num_items), both.votes[:, -1]].all()
    with pytest.warns(UserWarning, match=r"examples are the only voter .* 1 class\(es\) \(dog\): no item can have them"):
        alone = annotate(str(class_folder), templates="none", examples=str(examples), **common)
    assert alone.voters == [VOTER] and (alone.candidates.sum(1) == 1).all()
    assert np.array_equal(alone.votes[:, 0], both.votes[:, -1])
    assert np.allclose(alone.zero_shot_probs.sum(1), 1.0) and (alone.zero_shot_probs[:, 2] == 0).all()
    assert np.array_equal(alone.zero_shot_probs.argmax(1), alone.votes[:, 0])


def test_bad_examples_are_one_line(tmp_path, tiny_clip, class_folder):
    config, checkpoint = tiny_clip
    (tmp_path / "loose").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "loose" / "x.png")
    (tmp_path / "wrong" / "zebra").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "wrong" / "zebra" / "x.png")
    for folder, fragment in [
        (tmp_path / "missing", "not a folder"),
        (tmp_path / "loose", "needs one sub-folder per class"),
        (tmp_path / "wrong", "'zebra' is not one of the classes"),
    ]:
        with pytest.raises(UserError, match=fragment):
            annotate("digits", annotator="simulated", examples=str(folder), quiet=True)
    with pytest.raises(UserError, match="--templates none leaves no voter"):
        annotate(str(class_folder), templates="none", clip_model=str(config), pretrained=str(checkpoint), quiet=True)


def test_examples_through_the_cli_and_the_run_fingerprint(runner, cli, tmp_path):
    examples = write_examples(tmp_path / "examples", 1)
    out = tmp_path / "ann.npz"
    args = ["annotate", "digits", "--annotator", "simulated", "--examples", str(examples), "--out", str(out), "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_voters"] == 28 and load(out).voters[-1] == VOTER
    from coreg_edge.pipeline.calls import _annotate_settings, annotate_call
    from coreg_edge.recipe import load_recipe

    plain = load_recipe("digits", ["annotate.annotator=simulated"])
    assert "examples" not in _annotate_settings(plain, annotate_call(plain, tmp_path))  # old run folders unchanged
    given = load_recipe("digits", ["annotate.annotator=simulated", f"annotate.examples={examples}"])
    assert _annotate_settings(given, annotate_call(given, tmp_path))["examples"] == str(examples)


def test_examples_inside_data_are_refused(tmp_path, class_folder):
    with pytest.raises(UserError, match="overlaps DATA"):
        annotate(str(class_folder), annotator="simulated", examples=str(class_folder), shots=1, quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"^--examples .*no images found"):
        annotate("digits", annotator="simulated", examples=str(tmp_path / "empty"), quiet=True)
