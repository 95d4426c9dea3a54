"""One option, written once: the settings fields make the CLI options, the recipe keys and the checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile

import click
import pytest
from click.testing import CliRunner

from coreg_edge.cli import cli as main_cli
from coreg_edge.cli.common import settings_options
from coreg_edge.recipe import RecipeError, _dataclass_keys, load_recipe, schema
from coreg_edge.settings import AnnotateSettings, BenchSettings, ExportSettings, SettingError, TrainSettings
from coreg_edge.settings.bench import PredictSettings
from coreg_edge.settings.fields import (
    Range,
    build,
    check_fields,
    cli_flag,
    execution_keys,
    option,
    option_fields,
    resume_keys,
    seed_field,
)
from coreg_edge.settings.labels import LabelsSettings

COMMANDS = {"annotate": AnnotateSettings, "train": TrainSettings, "export": ExportSettings, "bench": BenchSettings,
            "labels": LabelsSettings, "predict": PredictSettings}


@pytest.mark.parametrize(
    ("range_", "inside", "outside", "words", "short"),
    [
        (Range(low=1), [1, 2, 1e9], [0, 0.5, float("inf"), float("nan")], ">= 1", "x>=1"),
        (Range(low=0, low_open=True), [1e-9, 3], [0, -1], "> 0", "x>0"),
        (Range(low=0, high=0.5, high_open=True), [0, 0.25, 0.49], [0.5, -0.1], "within [0, 0.5)", "0<=x<0.5"),
        (Range(low=0, high=1, low_open=True), [1, 0.5], [0, 1.01], "within (0, 1]", "0<x<=1"),
        (Range(high=10), [-5, 10], [10.5], "<= 10", "x<=10"),
    ],
)
def test_ranges_by_hand(range_, inside, outside, words, short):
    assert all(range_.contains(v) for v in inside)
    assert not any(range_.contains(v) for v in outside)
    assert range_.describe() == words and range_.short() == short


@pytest.mark.parametrize(
    ("cls", "changes", "message"),
    [
        (TrainSettings, {"holdout": 0.5}, "--holdout must be a number within [0, 0.5) (got 0.5)"),
        (TrainSettings, {"epochs": 0}, "--epochs must be a whole number within [1, 100000] (got 0)"),
        (TrainSettings, {"epochs": 2.5}, "--epochs must be a whole number (got 2.5)"),
        (TrainSettings, {"eval_data": 3}, "--eval must be a string (got 3)"),
        (TrainSettings, {"amp": "yes"}, "--amp must be one of auto, on, off (got 'yes')"),
        (TrainSettings, {"channels": 2}, "--channels must be one of 1, 3 (got 2)"),
        (AnnotateSettings, {"partial_rate": 1.5}, "--partial-rate must be a number within [0, 1] (got 1.5)"),
        (AnnotateSettings, {"temperature": 0}, "--temperature must be a number > 0 (got 0)"),
        (AnnotateSettings, {"item_noise": float("nan")}, "--item-noise must be a number >= 0 (got nan)"),
        (AnnotateSettings, {"strict": "yes"}, "--strict must be true or false (got 'yes')"),
        (ExportSettings, {"batch_size": 1}, "--batch-size must be a whole number >= 2 (got 1)"),
        (ExportSettings, {"target": "riscv"}, "--target must be one of auto, x86-vnni, x86-avx2, arm64, portable"),
        (BenchSettings, {"batch_sizes": (1, 0)}, "--batch-sizes must be whole numbers >= 1 (got [1, 0])"),
        (BenchSettings, {"batch_sizes": ()}, "--batch-sizes must be whole numbers >= 1, at least one"),
        (BenchSettings, {"batch_sizes": 8}, "--batch-sizes must be whole numbers (got 8)"),
    ],
)
def test_each_settings_class_checks_its_own_fields(cls, changes, message):
    with pytest.raises(SettingError) as info:
        cls(**changes)
    assert str(info.value).startswith(message)
    assert info.value.field == next(iter(changes)) and "\n" not in str(info.value)


def test_checks_across_fields_stay_with_the_dataclass():
    with pytest.raises(Exception, match=r"--warmup must be within 0..--epochs \(4\) \(got 5\)"):
        TrainSettings(epochs=4, warmup=5)
    assert BenchSettings(batch_sizes=[1, 32, 1]).batch_sizes == (1, 32)  # a TOML list; each size once


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_field_is_an_option_with_the_fields_default(command):
    """The command's options are the settings fields: same names, same defaults (one source)."""
    cmd = main_cli.get_command(click.Context(main_cli), command)
    params = {p.name: p for p in cmd.params}
    for field, spec in option_fields(COMMANDS[command]):
        if not spec.cli:
            assert field.name not in params or spec.common, field.name
            continue
        assert field.name in params, (command, field.name)
        param = params[field.name]
        assert cli_flag(field.name, spec) in param.opts, (command, field.name, param.opts)
        ctx = click.Context(cmd)
        default = param.type_cast_value(ctx, param.default) if param.default is not None else None
        default = param.callback(ctx, param, default) if param.callback else default
        if field.default is not dataclasses.MISSING:
            assert default == field.default, (command, field.name, default, field.default)


def test_the_same_bad_value_reads_the_same_from_the_cli_a_recipe_and_a_notebook(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main_cli, ["train", "x.npz", "--out", str(tmp_path / "r"), "--holdout", "0.7"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --holdout must be a number within [0, 0.5) (got 0.7)"
    with pytest.raises(RecipeError) as info:
        load_recipe("digits", ["train.holdout=0.7"])
    assert str(info.value).endswith("train.holdout: must be a number within [0, 0.5) (got 0.7)")
    with pytest.raises(SettingError, match=r"^--holdout must be a number within \[0, 0.5\) \(got 0.7\)$"):
        TrainSettings(holdout=0.7)


def test_a_recipe_names_where_a_field_set_elsewhere_goes():
    with pytest.raises(RecipeError, match=r"set it as classes.wording, not in \[annotate\]"):
        load_recipe("digits", ["annotate.wording=a {}"])
    with pytest.raises(RecipeError, match=r"set it as data.eval, not in \[train\]"):
        load_recipe("digits", ["train.eval_data=digits:test"])


@dataclasses.dataclass(frozen=True)
class _Demo:
    """A settings class as a new stage would write it: one field per option."""

    passes: int = option(3, help="How many passes.", low=1)
    style: str = option("fast", help="How.", choices=("fast", "slow"))
    verbose_log: bool = option(False, help="Log more.")
    hidden: str | None = option(cli=False, recipe="data.hidden")
    seed: int = seed_field()

    def __post_init__(self) -> None:
        check_fields(self)


def test_one_field_is_an_option_a_recipe_key_and_a_check():
    @click.command()
    @settings_options(_Demo)
    def demo(**options):
        click.echo(repr(_Demo(**options)))

    runner = CliRunner()
    ok = runner.invoke(demo, ["--passes", "5", "--style", "slow", "--verbose-log"])
    assert ok.exit_code == 0 and "passes=5, style='slow', verbose_log=True" in ok.output
    assert "[x>=1]" in runner.invoke(demo, ["--help"]).output
    assert runner.invoke(demo, ["--style", "medium"]).exit_code == 2  # click.Choice from the same tuple
    with pytest.raises(SettingError, match=r"--passes must be a whole number >= 1 \(got 0\)"):
        _Demo(passes=0)
    keys = _dataclass_keys(_Demo)
    assert set(keys) == {"passes", "style", "verbose_log"}  # hidden goes elsewhere, seed at the top level
    assert keys["style"].allowed() == ("fast", "slow") and keys["passes"].type == "int"


def test_build_takes_an_object_keywords_or_both():
    base = AnnotateSettings(annotator="synthetic", partial_rate=0.2)
    assert build(AnnotateSettings, base, {"seed": 3}) == dataclasses.replace(base, seed=3)
    assert build(AnnotateSettings, None, {"k": 2}).k == 2
    with pytest.raises(Exception, match="unknown AnnotateSettings setting: nope"):
        build(AnnotateSettings, None, {"nope": 1})


def test_library_functions_take_a_settings_object():
    from coreg_edge.annotate import annotate

    settings = AnnotateSettings(annotator="synthetic", partial_rate=0.2, noise_rate=0.1, seed=4)
    by_object = annotate("digits", settings=settings, quiet=True)
    by_keywords = annotate("digits", annotator="synthetic", partial_rate=0.2, noise_rate=0.1, seed=4, quiet=True)
    assert (by_object.candidates == by_keywords.candidates).all()
    assert by_object.annotator == by_keywords.annotator


def test_execution_and_resume_keys_come_from_the_fields():
    assert execution_keys(TrainSettings) == {"device", "compile", "channels_last", "workers", "download", "cache"}
    # amp and sync_bn change the numbers (run re-trains) but a resumed run on a CPU may drop them; the images
    # may have moved
    assert resume_keys(TrainSettings) == execution_keys(TrainSettings) | {"amp", "sync_bn", "data"}
    assert execution_keys(AnnotateSettings) == {"device", "batch_size", "workers", "strict", "download", "data_dir"}
    assert execution_keys(ExportSettings) == {"device"}  # where --qat fine-tunes


def test_the_bench_default_is_one_constant():
    from coreg_edge.pipeline import bench_call
    from coreg_edge.settings.bench import DEFAULT_BATCH_SIZES

    cmd = main_cli.get_command(click.Context(main_cli), "bench")
    param = next(p for p in cmd.params if p.name == "batch_sizes")
    assert param.default == ",".join(map(str, DEFAULT_BATCH_SIZES))
    recipe = load_recipe("digits", ["bench.batch_sizes=none"])  # a recipe that leaves it out
    assert BenchSettings(**bench_call(recipe)).batch_sizes == DEFAULT_BATCH_SIZES


def test_recipe_sections_list_no_key_twice_and_every_choice_from_its_field():
    sections = schema()
    assert sections["train"]["method"].allowed() == TrainSettings.__dataclass_fields__["method"].metadata[
        "option"
    ].allowed()
    assert sections["export"]["target"].allowed()[0] == "auto"


def test_building_the_cli_options_imports_no_torch():
    code = (
        "import sys, click\n"
        "from coreg_edge.cli import cli\n"
        "for name in ('annotate', 'train', 'export', 'bench', 'predict', 'labels'):\n"
        "    cli.get_command(click.Context(cli), name)\n"
        "heavy = [m for m in ('torch', 'timm', 'open_clip', 'onnx', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    assert result.returncode == 0, result.stderr
