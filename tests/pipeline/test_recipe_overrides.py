"""`--set KEY=VALUE`: dotted keys into any table, values parsed and type-checked like the TOML file."""

from __future__ import annotations

import pytest

from coreg_edge.recipe import RecipeError, load_recipe, parse_override


def test_parse_override_splits_on_the_first_equals():
    assert parse_override("train.coreg.lr=0.05") == ("train.coreg.lr", "0.05")
    assert parse_override("classes.wording=a=b {}") == ("classes.wording", "a=b {}")
    assert parse_override("train.batch-size=8") == ("train.batch_size", "8")
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_override("train.epochs")


def test_overrides_are_typed_per_key():
    recipe = load_recipe(
        "digits",
        [
            "train.epochs=5",
            "train.warmup=2",
            "train.coreg.lr=1",
            "train.coreg.warmup_view=strong",
            "annotate.noise_rate=0.1",
            "export.int8=false",
            "bench.batch_sizes=1,8",
            'classes.names=["zero", "one", "two", "3", "4", "5", "6", "7", "8", "9"]',
            "seed=3",
            "device=cpu",
            "data.eval=digits:test",
        ],
    )
    train = recipe.section("train")
    assert train["epochs"] == 5 and train["warmup"] == 2
    coreg = recipe.section("train.coreg")
    assert coreg["lr"] == 1.0 and isinstance(coreg["lr"], float) and coreg["warmup_view"] == "strong"
    assert coreg["queue_size"] == 1024  # untouched keys stay
    assert recipe.section("annotate")["noise_rate"] == 0.1
    assert recipe.section("export")["int8"] is False
    assert recipe.section("bench")["batch_sizes"] == [1, 8]
    assert recipe.section("classes")["names"][:2] == ["zero", "one"]
    assert (recipe.seed, recipe.device) == (3, "cpu")


def test_none_resets_a_key_to_the_library_default():
    recipe = load_recipe("digits", ["train.warmup=none"])
    assert "warmup" not in recipe.section("train")


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("train.epochs=five", ["--set train.epochs", "integer"]),
        ("train.epochs=2.5", ["--set train.epochs", "integer"]),
        ("train.coreg.lr=fast", ["--set train.coreg.lr", "number"]),
        ("export.int8=maybe", ["--set export.int8", "true or false"]),
        ("train.method=magic", ["--set train.method", "coreg", "proden"]),
        ("train.epoch=5", ["--set train.epoch", "unknown key", "epochs"]),
        ("train.coreg.nope=1", ["--set train.coreg.nope", "unknown key", "lr"]),
        ("trian.epochs=5", ["unknown section", "train"]),
        ("train.seed=1", ["--set train.seed", "top-level seed"]),
        ("data.train=none", ["--set data.train", "cannot be unset"]),
        ("train.warmup=40", ["--warmup"]),
        ("bench.batch_sizes=1,x", ["--set bench.batch_sizes", "integers"]),
    ],
)
def test_bad_overrides_give_one_line_errors(override, needles):
    with pytest.raises(RecipeError) as info:
        load_recipe("digits", [override])
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_cli_rejects_a_bad_set_before_doing_anything(runner, cli, tmp_path):
    result = runner.invoke(cli, ["run", "digits", "--out", str(tmp_path / "run"), "--set", "train.epochs=x"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: --set train.epochs") and "\n" not in result.output.strip()
    assert not (tmp_path / "run").exists()


def test_cli_flags_become_overrides_only_when_given(runner, cli, tmp_path, monkeypatch):
    import coreg_edge.pipeline as pipeline

    seen = []

    def fake_run_recipe(recipe, out, overrides, *, quiet=False):
        seen.append((recipe, out, list(overrides), quiet))
        raise pipeline.UserError("stop here")

    monkeypatch.setattr(pipeline, "run_recipe", fake_run_recipe)
    out = str(tmp_path / "run")
    runner.invoke(cli, ["run", "digits", "--out", out, "--set", "train.epochs=3", "-q"])
    runner.invoke(cli, ["run", "cifar10", "--out", out, "--seed", "4", "--device", "cpu", "--download"])
    runner.invoke(cli, ["demo", "--out", out])
    assert seen == [
        ("digits", out, ["train.epochs=3"], True),
        ("cifar10", out, ["data.download=true", "device=cpu", "seed=4"], False),
        ("digits", out, [], False),
    ]


def test_recipes_set_the_int8_target_and_recovery():
    recipe = load_recipe(
        "digits", ["export.target=arm64", "export.recover=false", "export.reduce_range=true"]
    )
    export = recipe.section("export")
    assert (export["target"], export["recover"], export["reduce_range"]) == ("arm64", False, True)
    with pytest.raises(RecipeError, match="export.target"):
        load_recipe("digits", ["export.target=x86-sse"])


def test_train_set_and_run_set_are_one_parser():
    from coreg_edge.cli.train import parse_overrides
    from coreg_edge.recipe import parse_setting

    assert parse_setting("train.coreg", "queue-size=256") == ("queue_size", 256)
    assert parse_setting("train.coreg", "lr_horizon=none") == ("lr_horizon", None)
    recipe = load_recipe("digits", ["train.coreg.queue_size=256", "train.coreg.lr=0.02"])
    typed = parse_overrides(("queue_size=256", "lr=0.02"))
    section = recipe.section("train.coreg")
    assert (typed["queue_size"], typed["lr"]) == (section["queue_size"], section["lr"]) == (256, 0.02)
    assert type(typed["queue_size"]) is type(section["queue_size"]) is int
    for text in ("queue_size=many", "nope=1"):
        with pytest.raises(RecipeError):
            parse_setting("train.coreg", text)
