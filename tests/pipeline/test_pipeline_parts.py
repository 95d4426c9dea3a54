"""Pipeline pieces without training: input fingerprints, class wording, the run-folder guard."""

from __future__ import annotations

import os

import numpy as np
import pytest

from coreg_edge.annotate import AnnotateSettings, annotate
from coreg_edge.annotation_file import load
from coreg_edge.pipeline import annotate_call, fingerprint, input_fingerprint
from coreg_edge.recipe import load_recipe


def test_input_fingerprints(tmp_path):
    assert input_fingerprint("digits") == "builtin:digits"
    assert input_fingerprint("cifar10:test") == "builtin:cifar10:test"
    assert input_fingerprint("default") == "name:default"
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "a.png").write_bytes(b"x")
    first = input_fingerprint(folder)
    assert first.startswith("folder:") and input_fingerprint(folder) == first
    (folder / "cat" / "b.png").write_bytes(b"y")
    second = input_fingerprint(folder)
    assert second != first
    os.utime(folder / "cat" / "b.png", ns=(1, 1))
    assert input_fingerprint(folder) != second
    file = tmp_path / "templates.txt"
    file.write_text("a photo of a {}\n")
    digest = input_fingerprint(file)
    file.write_text("a picture of a {}\n")
    assert input_fingerprint(file) != digest and digest.startswith("sha256:")


def test_fingerprint_depends_on_settings_and_inputs():
    base = fingerprint({"epochs": 2}, {"annotation": "abc"})
    assert base == fingerprint({"epochs": 2}, {"annotation": "abc"})
    assert base != fingerprint({"epochs": 3}, {"annotation": "abc"})
    assert base != fingerprint({"epochs": 2}, {"annotation": "abd"})


def test_wording_reaches_the_prompts_and_names_stay_plain(tmp_path, tiny_clip):
    """A built-in dataset annotated by (a tiny random) CLIP with a recipe wording: prompts are worded,
    the annotation's class names stay the dataset's, so the exported model answers "3", not "digit 3"."""
    from coreg_edge.annotation_file import load

    config, checkpoint = tiny_clip
    recipe = load_recipe(
        "digits",
        [
            "annotate.annotator=clip",
            f"annotate.clip_model={config}",
            f"annotate.pretrained={checkpoint}",
            'annotate.templates=["a photo of the {}", "a drawing of the {}"]',
            "classes.wording=handwritten digit {}",
            "device=cpu",
        ],
    )
    out = tmp_path / "ann.npz"
    call = annotate_call(recipe, tmp_path)
    (tmp_path / "templates.txt").write_text("a photo of the {}\na drawing of the {}\n")
    annotate(recipe.data["train"], out, AnnotateSettings(**call), quiet=True)
    ann = load(out)
    assert ann.class_names == [str(i) for i in range(10)]
    assert ann.extra["prompt_names"][3] == "handwritten digit 3"
    assert ann.voters == ["a photo of the {}", "a drawing of the {}"]
    assert ann.votes.shape == (1437, 2) and np.all(ann.candidates.sum(1) >= 1)


def test_wording_on_an_image_folder_words_the_prompts(tmp_path, class_folder, tiny_clip):
    config, checkpoint = tiny_clip
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(
        f'[data]\ntrain = "{class_folder}"\n[classes]\nwording = "a {{}} face"\n'
        f'[annotate]\nclip_model = "{config}"\npretrained = "{checkpoint}"\n'
    )
    recipe = load_recipe(recipe_file)
    annotate(recipe.data["train"], tmp_path / "ann.npz", AnnotateSettings(**annotate_call(recipe, tmp_path)), quiet=True)
    ann = load(tmp_path / "ann.npz")
    assert ann.class_names == ["bird", "cat", "dog"]
    assert ann.extra["prompt_names"] == ["a bird face", "a cat face", "a dog face"]


def test_a_run_folder_of_another_recipe_is_refused(runner, cli, tmp_path):
    """Running recipe B into recipe A's folder would replace A's outputs: refused before any stage runs."""
    run = tmp_path / "run"
    run.mkdir()
    state = '{"format_version": 1, "stages": {}, "recipe": "digits"}\n'
    (run / "stages.json").write_text(state)
    other = tmp_path / "other.toml"
    other.write_text('[data]\ntrain = "digits"\n')
    result = runner.invoke(cli, ["run", str(other), "--out", str(run)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "recipe 'digits', not 'other'" in lines[0], result.stderr
    assert sorted(p.name for p in run.iterdir()) == ["stages.json"]
    assert (run / "stages.json").read_text() == state


def test_the_run_re_annotates_over_its_own_stale_annotation(tmp_path):
    """Outputs are never replaced, except a run's own stage output whose settings or inputs changed: the
    annotate stage replaces RUN/ann.npz (annotate() alone refuses an existing file)."""
    from coreg_edge.errors import UserError
    from coreg_edge.pipeline.layout import ANNOTATION_FILE
    from coreg_edge.pipeline.stages import _Run

    first = load_recipe("digits", ["annotate.partial_rate=0.1", "device=cpu"])
    _Run(first, tmp_path, True).annotate()
    before = load(tmp_path / ANNOTATION_FILE).candidates.sum()
    with pytest.raises(UserError, match="exists"):
        annotate("digits", tmp_path / ANNOTATION_FILE, AnnotateSettings(**annotate_call(first, tmp_path)), quiet=True)
    changed = load_recipe("digits", ["annotate.partial_rate=0.5", "device=cpu"])
    _Run(changed, tmp_path, True).annotate()
    assert load(tmp_path / ANNOTATION_FILE).candidates.sum() > before
