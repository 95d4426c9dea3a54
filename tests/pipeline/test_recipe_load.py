"""Recipes: every built-in loads and validates; bad recipes fail in one line naming the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from coreg_edge.recipe import RecipeError, builtin_recipes, load_recipe, schema

PAPER = ("cifar10", "cifar100", "svhn", "fmnist", "eurosat", "gtsrb")
GOOD = """
name = "tiny"
[data]
train = "digits"
eval = "digits:test"
[annotate]
annotator = "synthetic"
partial_rate = 0.3
[train]
method = "coreg"
epochs = 4
warmup = 2
[train.coreg]
lr = 0.05
[export]
int8 = true
[bench]
batch_sizes = [1, 32]
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_builtin_recipe_loads_and_validates():
    names = builtin_recipes()
    assert set(PAPER) | {"digits", "fer2013"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.source == f"builtin:{name}"
        assert recipe.data["train"]


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipes_follow_the_spec(name):
    recipe = load_recipe(name)
    train, coreg, ann = recipe.section("train"), recipe.section("train.coreg"), recipe.section("annotate")
    assert (ann["clip_model"], ann["pretrained"], ann["mode"], ann["templates"]) == (
        "ViT-B-32", "openai", "union-top1", "default",
    )  # fmt: skip
    assert (train["backbone"], train["small_stem"], train["batch_size"]) == ("resnet18", True, 256)
    assert (coreg["lr"], coreg["loss_start"], coreg["ramp_epochs"], coreg["warmup_view"]) == (
        0.01,
        10,
        16,
        "strong",
    )
    schedule = {"cifar10": (800, 50), "cifar100": (800, 100), "svhn": (800, 50)}.get(name, (100, 50))
    assert (train["epochs"], train["warmup"]) == schedule
    size = {"fmnist": 28, "eurosat": 64, "gtsrb": 64}.get(name, 32)
    assert train["image_size"] == size
    assert recipe.data["eval"] == f"{name}:test"
    assert recipe.section("export")["int8"] is True


def test_class_wording_per_spec():
    assert load_recipe("svhn").section("classes")["wording"] == "number {}"
    gtsrb = load_recipe("gtsrb").section("classes")
    assert gtsrb["wording"] == "German Traffic Sign: {}" and len(gtsrb["names"]) == 43
    assert gtsrb["names"][6] == "Speed limit 80 cancelled"
    fer = load_recipe("fer2013")
    assert (
        fer.section("classes")["wording"] == "{} Facial Expression" and fer.section("train")["channels"] == 1
    )


def test_digits_is_offline_synthetic():
    recipe = load_recipe("digits")
    assert recipe.data == {"train": "digits", "eval": "digits:test", "download": False}
    ann = recipe.section("annotate")
    assert (ann["annotator"], ann["partial_rate"], ann["noise_rate"]) == ("synthetic", 0.3, 0.2)


def test_stage_sections_are_the_settings_fields():
    """[annotate], [train], [export] and [bench] keys are the settings fields they feed (same names); a
    field a recipe sets elsewhere is named with where it goes."""
    import dataclasses

    from coreg_edge.settings import AnnotateSettings, BenchSettings, ExportSettings, TrainSettings
    from coreg_edge.settings.fields import spec_of

    sections = schema()
    for section, cls in (("annotate", AnnotateSettings), ("train", TrainSettings), ("export", ExportSettings),
                         ("bench", BenchSettings)):  # fmt: skip
        in_section = {f.name for f in dataclasses.fields(cls) if spec_of(f).recipe is True}
        assert set(sections[section]) == in_section, section
    assert "eval_data" not in sections["train"] and "max_image_pixels" in sections["annotate"]


def test_a_file_and_the_toml_suffix_work(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.name == "tiny" and recipe.section("train.coreg") == {"lr": 0.05}
    assert load_recipe("digits.toml").name == "digits"
    assert recipe.section("bench")["batch_sizes"] == [1, 32]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD + "\n[oops]\nx = 1\n", ["'oops'", "[data]", "[train]"]),
        (GOOD.replace("epochs = 4", "epoch = 4"), ["train.epoch", "unknown key", "epochs", "warmup"]),
        (
            GOOD.replace("lr = 0.05", "lr = 0.05\nlearning_rate = 1.0"),
            ["train.coreg.learning_rate", "queue_size"],
        ),
        (GOOD.replace("epochs = 4", 'epochs = "four"'), ["train.epochs", "integer"]),
        (
            GOOD.replace('method = "coreg"', 'method = "dividemix"'),
            ["train.method", "coreg", "proden", "supervised"],
        ),
        (GOOD.replace("int8 = true", 'int8 = "yes"'), ["export.int8", "true or false"]),
        (
            GOOD.replace('annotator = "synthetic"', 'annotator = "gpt"'),
            ["annotate.annotator", "clip", "synthetic"],
        ),
        (GOOD.replace("batch_sizes = [1, 32]", 'batch_sizes = ["1"]'), ["bench.batch_sizes", "integers"]),
        (GOOD.replace("lr = 0.05", "lr = -1.0"), ["train.coreg.lr: must be > 0"]),
        (GOOD.replace("warmup = 2", "warmup = 9"), ["[train]", "--warmup"]),
        (GOOD.replace("[train]", "[train]\neval_data = 'x'"), ["train.eval_data", "data.eval"]),
        (GOOD.replace('train = "digits"\n', ""), ["data.train", "required"]),
        (GOOD.replace("partial_rate = 0.3", "partial_rate = 1.5"), ["annotate.partial_rate", "[0, 1]"]),
        ("seeds = 3\n" + GOOD, ["'seeds'", "seed"]),
        (GOOD.replace('partial_rate = 0.3', 'partial_rate = 0.3\ntemplates = ["a {x} of {}"]'),
         ["annotate.templates", "exactly one {}"]),
        (GOOD.replace('[annotate]', '[classes]\nwording = "{n} {}"\n[annotate]'), ["classes.wording", "exactly one {}"]),
        ("[data\ntrain = 1", ["not valid TOML"]),
    ],
)
def test_bad_recipes_give_one_line_errors(tmp_path, text, needles):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path))
    for needle in needles:
        assert needle in message, (needle, message)


def test_unknown_recipe_lists_the_builtins():
    with pytest.raises(RecipeError, match="not a built-in recipe.*cifar10.*digits"):
        load_recipe("no_such_recipe")


def test_cli_reports_a_bad_recipe_in_one_line(runner, cli, tmp_path):
    path = write(tmp_path, GOOD.replace("epochs = 4", "epoch = 4"))
    result = runner.invoke(cli, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "train.epoch" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_lists_builtin_recipes(runner, cli):
    result = runner.invoke(cli, ["run", "--list"])
    assert result.exit_code == 0, result.output
    assert {line.split()[0] for line in result.output.splitlines()} >= {"digits", "cifar10", "gtsrb"}
