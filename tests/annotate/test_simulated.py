"""The simulated annotator: an instance-dependent CLIP stand-in on labelled data (digits, class folders)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreg_edge.annotate import annotate
from coreg_edge.annotate.registry import annotator_names
from coreg_edge.annotate.simulated import (
    PRESETS,
    SimulatorKnobs,
    image_feature,
    resolve_knobs,
    simulate,
)
from coreg_edge.annotation_file import load
from coreg_edge.choices import SIMULATOR_PRESETS
from coreg_edge.data import open_source
from coreg_edge.errors import UserError
from coreg_edge.recipe import RecipeError, load_recipe

# The ranges docs/ALGORITHM.md#simulated promises for the presets on digits.
RANGES = {
    "easy": {"zero_shot": (0.88, 0.92), "set_size": (1.3, 1.6), "coverage": (0.93, 0.97)},
    "hard": {"zero_shot": (0.60, 0.72), "set_size": (2.0, 3.0), "coverage": (0.80, 0.88)},
}


@pytest.fixture(scope="module")
def digits():
    """(images, labels) of digits:train, 1,437 items, 10 classes."""
    source = open_source("digits")
    return [source.load(i) for i in range(len(source))], source.labels


def features(images, size):
    return np.stack([image_feature(image, size) for image in images])


def run(digits, preset="easy", seed=0, **changes):
    images, labels = digits
    knobs = resolve_knobs(preset, changes)
    return simulate(features(images, knobs.feature_size), labels, 10, knobs, seed), labels


def measured(sim, labels):
    rows = np.arange(len(labels))
    return {
        "zero_shot": float((sim.zero_shot_probs.argmax(1) == labels).mean()),
        "set_size": float(sim.candidates.sum(1).mean()),
        "coverage": float(sim.candidates[rows, labels].mean()),
    }


def test_shapes_dtypes_and_probabilities(digits):
    sim, labels = run(digits, sim_templates=7)
    assert sim.votes.shape == (1437, 7) and sim.votes.dtype == np.int16
    assert sim.votes.min() >= 0 and sim.votes.max() <= 9
    assert sim.zero_shot_probs.shape == (1437, 10) and sim.zero_shot_probs.dtype == np.float32
    assert np.allclose(sim.zero_shot_probs.sum(1), 1.0, atol=1e-5)
    assert sim.candidates.shape == (1437, 10) and sim.candidates.dtype == bool
    assert sim.weak_logits.shape == (1437, 10) and sim.template_bias.shape == (7, 10)


def test_every_set_is_the_union_of_its_votes(digits):
    sim, _ = run(digits, "hard")
    for row, votes in zip(sim.candidates, sim.votes, strict=True):
        assert set(np.flatnonzero(row).tolist()) == set(votes.tolist())


def test_without_noise_every_template_votes_the_weak_argmax_and_probs_are_its_softmax(digits):
    sim, _ = run(digits, template_bias=0.0, item_noise=0.0, temperature=0.5, sim_templates=3)
    weak = sim.weak_logits.astype(np.float64)
    assert (sim.votes == weak.argmax(1)[:, None]).all()
    assert (sim.candidates.sum(1) == 1).all()
    expected = np.exp((weak - weak.max(1, keepdims=True)) / 0.5)
    assert np.allclose(sim.zero_shot_probs, expected / expected.sum(1, keepdims=True), atol=1e-5)


def test_same_seed_same_votes_other_seed_differs(digits):
    a, _ = run(digits, seed=4)
    b, _ = run(digits, seed=4)
    c, _ = run(digits, seed=5)
    assert (a.votes == b.votes).all() and np.array_equal(a.zero_shot_probs, b.zero_shot_probs)
    assert (a.votes != c.votes).any() and (a.weak_logits != c.weak_logits).any()


def test_more_templates_keep_the_first_templates_votes(digits):
    few, _ = run(digits, sim_templates=4)
    many, _ = run(digits, sim_templates=9)
    assert (many.votes[:, :4] == few.votes).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("preset", ["easy", "hard"])
def test_presets_land_in_their_documented_ranges_on_digits(digits, preset, seed):
    stats = measured(*run(digits, preset, seed=seed))
    for key, (low, high) in RANGES[preset].items():
        assert low <= stats[key] <= high, (preset, seed, key, stats)


def test_hard_has_lower_zero_shot_accuracy_and_larger_sets_than_easy(digits):
    easy, hard = measured(*run(digits, "easy")), measured(*run(digits, "hard"))
    assert hard["zero_shot"] < easy["zero_shot"] - 0.1
    assert hard["set_size"] > easy["set_size"] + 0.4
    assert hard["coverage"] < easy["coverage"]


def test_mistakes_are_instance_dependent_not_independent_per_template(digits):
    """Items the weak classifier gets wrong are wrong under most templates; the others under few. With
    independent per-template noise of the same error rate, the share of wrong votes per item would be
    binomial: its variance p (1 - p) / T. Here it is many times larger."""
    sim, labels = run(digits, "hard")
    wrong_share = (sim.votes != labels[:, None]).mean(1)
    weak_wrong = sim.weak_logits.argmax(1) != labels
    assert weak_wrong.sum() > 100  # hard: hundreds of such items
    assert wrong_share[weak_wrong].mean() > 0.7
    assert wrong_share[~weak_wrong].mean() < 0.2
    p, t = wrong_share.mean(), sim.votes.shape[1]
    assert wrong_share.var() > 10 * p * (1 - p) / t


def test_votes_follow_the_class_prior_of_imbalanced_data(digits):
    """Vote shares (what `estimate_prior_from_votes` reads) track the label shares, imbalance included.
    The weak classifier learns from `shots` items of every class, so like CLIP it does not know the prior:
    rare classes get a little more than their share, yet far closer to it than a uniform prior is."""
    images, labels = digits
    keep = np.flatnonzero((labels < 5) | (np.arange(len(labels)) % 4 == 0))  # classes 5-9 at a quarter
    knobs = resolve_knobs("easy")
    sim = simulate(features([images[i] for i in keep], 8), labels[keep], 10, knobs, seed=0)
    label_share = np.bincount(labels[keep], minlength=10) / len(keep)
    vote_share = np.bincount(sim.votes.reshape(-1), minlength=10) / sim.votes.size
    assert label_share[:5].min() > 2.5 * label_share[5:].max()  # the subset is imbalanced
    assert vote_share[:5].min() > 1.5 * vote_share[5:].max()
    uniform_gap = np.abs(0.1 - label_share).sum()
    assert np.abs(vote_share - label_share).sum() < 0.4 * uniform_gap


def test_a_strong_template_bias_makes_each_template_favour_its_own_class(digits):
    sim, _ = run(digits, template_bias=3.0, item_noise=0.0, sim_templates=6)
    for j in range(6):
        favourite = np.bincount(sim.votes[:, j], minlength=10).argmax()
        assert favourite == sim.template_bias[j].argmax()


def test_two_classes_and_a_class_without_items():
    """Binary logistic regression (a 1-D margin in scikit-learn) and a class nobody is labelled with."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    feats = rng.normal(size=(100, 4)).astype(np.float32) + labels[:, None] * 2.0
    knobs = SimulatorKnobs(shots=5, templates=4, template_bias=0.0, item_noise=0.0, temperature=1.0,
                           feature_size=2)  # fmt: skip
    sim = simulate(feats, labels, 3, knobs, seed=0)
    assert (sim.weak_logits.argmax(1) == labels).mean() > 0.9
    assert not (sim.votes == 2).any()  # only noise could vote for the empty class


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"item_noise": -0.1}, "--item-noise must be a number >= 0"),
        ({"template_bias": float("nan")}, "--template-bias must be a number >= 0"),
        ({"shots": 0}, "--shots must be a whole number >= 1"),
        ({"sim_templates": 0}, "--sim-templates must be a whole number >= 1"),
        ({"temperature": 0.0}, "--temperature must be a number > 0"),
        ({"feature_size": 2.5}, "--feature-size must be a whole number"),
    ],
)
def test_invalid_knobs_are_one_user_error_line(changes, fragment):
    with pytest.raises(UserError) as info:
        annotate("digits", annotator="simulated", quiet=True, **changes)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_unknown_preset_is_one_user_error_line():
    with pytest.raises(UserError, match=r"^--preset must be one of easy, hard \(got 'medium'\)$"):
        annotate("digits", annotator="simulated", preset="medium", quiet=True)


def test_presets_and_choices_name_the_same_presets():
    assert tuple(PRESETS) == SIMULATOR_PRESETS and "simulated" in annotator_names()


def test_annotate_writes_a_file_that_loads_with_stats(tmp_path):
    out = tmp_path / "hard.npz"
    options = {"annotator": "simulated", "preset": "hard", "item_noise": 0.3, "seed": 2, "quiet": True}
    returned = annotate("digits", out, **options)
    ann = load(out)
    assert ann.num_items == 1437 and ann.votes.shape == (1437, 27)
    assert ann.voters == [f"simulated-{j}" for j in range(27)]
    hard = PRESETS["hard"]
    assert ann.annotator == {
        "kind": "simulated", "model": None, "pretrained": None, "mode": None, "k": None, "ratio": None,
        "partial_rate": None, "noise_rate": None, "seed": 2, "preset": "hard", "shots": hard.shots,
        "sim_templates": hard.templates, "template_bias": hard.template_bias, "item_noise": 0.3,
        "temperature": hard.temperature, "feature_size": hard.feature_size,
    }  # fmt: skip
    stats = ann.stats()
    expected = float((ann.zero_shot_probs.argmax(1) == ann.labels).mean())
    assert stats["zero_shot_accuracy"] == pytest.approx(expected) and 0.5 < expected < 0.8
    assert stats == returned.stats()
    rows = np.arange(ann.num_items)
    assert stats["coverage"] == pytest.approx(ann.candidates[rows, ann.labels].mean())


def test_cli_prints_zero_shot_accuracy_and_is_reproducible(runner, cli, tmp_path):
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path in paths:
        args = ["annotate", "digits", "--annotator", "simulated", "--preset", "hard", "--sim-templates", "9",
                "--seed", "3", "--out", str(path)]  # fmt: skip
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "zero-shot accuracy" in result.stderr and "zero-shot accuracy n/a" not in result.stderr
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert load(paths[0]).votes.shape == (1437, 9)
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "simulated", "--json", "-q",
                                 "--out", str(tmp_path / "c.npz")])  # fmt: skip
    stats = json.loads(result.stdout)
    assert 0.88 <= stats["zero_shot_accuracy"] <= 0.92 and stats["num_voters"] == 27


def test_cli_a_folder_without_labels_is_one_line(runner, cli, flat_folder, tmp_path):
    out = tmp_path / "out.npz"
    args = ["annotate", str(flat_folder), "--annotator", "simulated", "--classes", "a,b", "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: the simulated annotator needs ground truth"), err
    assert not out.exists()


def test_cli_a_bad_knob_is_one_line(runner, cli, tmp_path):
    out = tmp_path / "out.npz"
    args = ["annotate", "digits", "--annotator", "simulated", "--shots", "0", "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2 and not out.exists()  # a usage error, as click's own checks
    assert result.stderr.strip() == "Error: --shots must be a whole number >= 1 (got 0)"


def test_class_folder_unreadable_images_are_skipped(runner, cli, class_folder, tmp_path):
    (class_folder / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "ann.npz"
    args = ["annotate", str(class_folder), "--annotator", "simulated", "--shots", "2", "--out", str(out),
            "-q"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    ann = load(out)
    assert ann.num_items == 13 and [s["item"] for s in ann.skipped] == ["cat/broken.jpg"]
    assert ann.class_names == ["bird", "cat", "dog"] and ann.stats()["zero_shot_accuracy"] is not None
    strict = runner.invoke(cli, [*args[:-2], str(tmp_path / "strict.npz"), "--strict"])
    assert strict.exit_code == 1 and "unreadable image" in strict.stderr


RECIPE = """
[data]
train = "digits"
[annotate]
annotator = "simulated"
preset = "hard"
item_noise = 0.3
"""


def test_recipe_keys_reach_annotate_and_the_stage_settings(tmp_path):
    from coreg_edge.annotate import AnnotateSettings
    from coreg_edge.pipeline import annotate_call
    from coreg_edge.pipeline.calls import _annotate_settings

    path = tmp_path / "sim.toml"
    path.write_text(RECIPE, encoding="utf-8")
    recipe = load_recipe(path)
    call = annotate_call(recipe, tmp_path)
    assert (call["annotator"], call["preset"], call["item_noise"]) == ("simulated", "hard", 0.3)
    settings = _annotate_settings(recipe, call)
    hard = PRESETS["hard"]
    assert settings["item_noise"] == 0.3 and settings["shots"] == hard.shots  # the knobs used, resolved
    assert settings["sim_templates"] == hard.templates and settings["preset"] == "hard"
    assert not {"clip_model", "templates", "partial_rate", "noise_rate"} & set(settings)
    out = tmp_path / "ann.npz"
    annotate(recipe.data["train"], out, AnnotateSettings(**call), quiet=True)
    ann = load(out)
    assert ann.annotator["preset"] == "hard" and ann.annotator["item_noise"] == 0.3
    # a synthetic recipe's settings carry no simulator keys: existing run folders keep their fingerprints
    synthetic = load_recipe(path, ["annotate.annotator=synthetic"])
    plain = _annotate_settings(synthetic, annotate_call(synthetic, tmp_path))
    assert not {"preset", "shots", "sim_templates", "item_noise", "temperature"} & set(plain)


@pytest.mark.parametrize(
    "line, needles",
    [
        ('preset = "medium"', ["annotate.preset", "easy, hard"]),
        ("shots = 0", ["annotate.shots", "must be a whole number >= 1"]),
        ("sim_templates = 0", ["annotate.sim_templates", "must be a whole number >= 1"]),
        ("template_bias = -1.0", ["annotate.template_bias", "number >= 0"]),
        ("item_noise = nan", ["annotate.item_noise", "number >= 0"]),
        ("temperature = 0.0", ["annotate.temperature", "number > 0"]),
        ('item_noise = "lots"', ["annotate.item_noise", "a number"]),
    ],
)
def test_bad_simulator_recipe_values_are_one_line(tmp_path, line, needles):
    path = tmp_path / "bad.toml"
    key = line.split(" = ")[0]
    lines = [old for old in RECIPE.splitlines() if not old.startswith(f"{key} = ")]
    path.write_text("\n".join([*lines, line]) + "\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
