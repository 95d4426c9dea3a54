"""`coreg-edge run RECIPE` and `coreg-edge demo`: every stage in one resumable run folder."""

from __future__ import annotations

import json

import click

from coreg_edge.cli.common import common_options, handle_errors
from coreg_edge.errors import UserError
from coreg_edge.utils import torchrun_world

SET_HELP = (
    "Override a recipe key with a dotted KEY=VALUE (type-checked), e.g. train.epochs=5, train.coreg.lr=0.05, "
    "annotate.noise_rate=0.1, export.formats=fp32,int8, bench.batch_sizes=1,32, seed=1; repeatable."
)

RUN_EPILOG = """\b
Examples:
  coreg-edge run digits --out runs/digits
  coreg-edge run cifar10 --download --out runs/cifar10
  coreg-edge run recipes/my_photos.toml --set train.epochs=60 --set train.coreg.lr=0.05
  coreg-edge run --list

\b
RECIPE is a TOML file or the name of a built-in recipe. The run folder gets annotation.npz, train/,
export/ (a file per [export] format: model.onnx, model.int8.onnx, ...; parity.json), bench.json,
stages.json, summary.json and report.html (the pictures; needs the report extra). Running
the same command again skips every stage whose outputs are complete and whose settings and inputs are
unchanged, so an interrupted run continues where it stopped (training resumes from its last epoch).
--seed and --device override the recipe's own only when given.
"""


def _overrides(ctx: click.Context, overrides: tuple[str, ...], download: bool) -> list[str]:
    """--set values, plus --download/--device/--seed when given explicitly (else the recipe's own)."""
    extra = list(overrides)
    if download:
        extra.append("data.download=true")
    for name in ("device", "seed"):
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            extra.append(f"{name}={ctx.params[name]}")
    return extra


def _run_and_show(recipe: str, out: str | None, overrides: list[str], as_json: bool, quiet: bool) -> dict:
    # lazy: CLI start-up (--help imports every command module)
    from coreg_edge.pipeline import format_summary, run_recipe

    if torchrun_world() > 1:
        raise UserError("run and demo are one process; under torchrun use `coreg-edge train` (docs/SCALE.md)")

    def show(summary: dict) -> None:
        click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))

    try:
        summary = run_recipe(recipe, out, overrides, quiet=quiet)
    except Exception as exc:
        if getattr(exc, "summary", None):  # a failed export still reports what was measured
            show(exc.summary)  # type: ignore[attr-defined]
        raise
    show(summary)
    return summary


@click.command(epilog=RUN_EPILOG)
@click.argument("recipe", required=False)
@click.option(
    "--out", "-o", type=click.Path(file_okay=False), default=None, help="Run folder [default: runs/NAME]."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--download", is_flag=True, help="Download built-in datasets if needed (= --set data.download=true)."
)
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the table.")
@click.option("--list", "list_recipes", is_flag=True, help="List the built-in recipes and exit.")
@common_options
@handle_errors
def run(
    recipe: str | None,
    out: str | None,
    overrides: tuple[str, ...],
    download: bool,
    as_json: bool,
    list_recipes: bool,
    device: str,
    seed: int,
    quiet: bool,
) -> None:
    """Annotate, train, select, export (fp32 + int8), check parity and bench, as RECIPE says."""
    # lazy: CLI start-up (--help imports every command module)
    from coreg_edge.recipe import builtin_recipes, load_recipe

    if list_recipes:
        for name in builtin_recipes():
            description = load_recipe(name).tree.get("description", "")
            click.echo(f"{name:<10} {description}")
        return
    if recipe is None:
        raise UserError("RECIPE is required: a TOML file or a built-in name (coreg-edge run --list)")
    ctx = click.get_current_context()
    _run_and_show(recipe, out, _overrides(ctx, overrides, download), as_json, quiet)


@click.command(
    epilog="""\b
Examples:
  coreg-edge demo
  coreg-edge demo --out /tmp/demo --set train.epochs=10

\b
The same as `coreg-edge run digits`: scikit-learn's handwritten digits with synthetic noisy candidate
sets, a Co-Reg pair, int8 export, parity and bench. Fully offline; a few minutes on 2 CPU cores.
"""
)
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs/demo", show_default=True,
              help="Run folder.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the table.")
@common_options
@handle_errors
def demo(out: str, overrides: tuple[str, ...], as_json: bool, device: str, seed: int, quiet: bool) -> None:
    """Every stage end to end on built-in digits, offline: ends with the deployable int8 model."""
    ctx = click.get_current_context()
    _run_and_show("digits", out, _overrides(ctx, overrides, False), as_json, quiet)
