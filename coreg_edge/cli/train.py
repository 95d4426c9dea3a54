"""`coreg-edge train`: an annotation file -> a run folder (both peers, metrics, the selected peer)."""

from __future__ import annotations

import json

import click

from coreg_edge.choices import ON_OFF, STRONG_AUGMENT
from coreg_edge.cli.common import common_options, echo, handle_errors
from coreg_edge.training.methods import method_names

METHOD_HELP = (
    "coreg (default): the paper's pair; baselines on the same budget: proden, cc, ce-top1 (cross-entropy on "
    "the annotator's top-1: CLIP's zero-shot argmax, or for synthetic files one candidate drawn per item "
    "with the seed), supervised (true labels; the upper bound)."
)


class RegisteredMethod(click.Choice):
    """--method's choices: the method registry's names when asked, so a registered method is a choice."""

    def __init__(self) -> None:
        super().__init__(method_names())

    @property
    def choices(self) -> tuple[str, ...]:
        return method_names()

    @choices.setter
    def choices(self, value: object) -> None:  # click.Choice.__init__ assigns; the registry decides
        pass


@click.command(
    epilog="""\b
Examples:
  coreg-edge train ann.npz --out runs/photos
  coreg-edge train digits.npz --backbone resnet10t --image-size 16 --epochs 30 --eval digits:test --out runs/digits
  coreg-edge train digits.npz --method proden --eval digits:test --out runs/digits-proden
  coreg-edge train --resume --out runs/digits
  coreg-edge train ann.npz --set lr=0.02 --set min_p_share=0.3 --out runs/tuned
  coreg-edge train ann.npz --backbone resnet18 --pretrained-backbone timm --out runs/finetuned
  coreg-edge train ann.npz --backbone resnet18 --pretrained-backbone resnet18.safetensors --image-size 64 --out runs/ft64
"""
)
@click.argument("annotation", required=False)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--method", type=RegisteredMethod(), default="coreg",
              show_default=True, help=METHOD_HELP)  # fmt: skip
@click.option("--backbone", default="resnet18", show_default=True, help="Any timm model name.")
@click.option("--pretrained-backbone", default=None, metavar="TEXT",
              help="timm (timm's own weights, via the Hugging Face cache) or a checkpoint FILE (.safetensors, "
                   ".pth/.pt/.bin) of the backbone's weights; its head is dropped. The preprocessing follows "
                   "the weights' (mean, std, size). Default: from scratch.")  # fmt: skip
@click.option(
    "--backbone-lr-scale",
    type=float,
    default=None,
    help="Backbone lr / head lr, in [0, 1]. Default: 0.1 with --pretrained-backbone, else 1.",
)
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--warmup", type=int, default=None,
              help="Warm-up epochs (Co-Reg). Default: until the held-out hit rate flattens, 20-50% of --epochs.")
@click.option(
    "--batch-size", type=int, default=None,
    help="Items from P (and from U) per step. Default: chosen from the data size (about 40 steps per epoch).",
)
@click.option(
    "--image-size", type=int, default=None,
    help="Input size in px. Default: the dataset's (32 for folders); the weights' with --pretrained-backbone.",
)
@click.option(
    "--small-stem/--no-small-stem",
    default=None,
    help="3x3 stride-1 stem for ResNets. Default: on at <= 64 px from scratch; off with "
    "--pretrained-backbone (which keeps the pretrained stem and refuses --small-stem).",
)
@click.option(
    "--strong-augment",
    type=click.Choice(STRONG_AUGMENT),
    default="auto",
    show_default=True,
    help="Strong view: auto = the dataset's rule (RandAugment + Cutout; Cutout only for Fashion-MNIST); "
    "weak = the weak view (tiny inputs, where RandAugment + Cutout destroy the content).",
)
@click.option(
    "--holdout", type=float, default=0.05, show_default=True, help="Share held out for peer selection."
)
@click.option(
    "--keep-best/--no-keep-best", default=True, show_default=True,
    help="Keep each peer's best label-free epoch: when its predictions collapse or its held-out hit rate falls "
    "sharply, roll back (halving the lr), stop after the third time, and ship the best epoch's weights.",
)
@click.option(
    "--eval",
    "eval_data",
    help="Labelled DATA to report test accuracy on (e.g. digits:test); never used to choose.",
)
@click.option(
    "--val", "val_data", help="Labelled DATA to select the peer by accuracy instead of the label-free score."
)
@click.option("--data", help="Where the annotated images are now, if they moved since annotation.")
@click.option("--download", is_flag=True, help="Download built-in --eval/--val datasets if needed.")
@click.option("--compile", "compile_mode", type=click.Choice(ON_OFF), default="auto", show_default=True,
              help="torch.compile (auto = on for CUDA; probed, eager fallback).")  # fmt: skip
@click.option("--amp", type=click.Choice(ON_OFF), default="auto", show_default=True,
              help="bf16 autocast (auto = on for CUDA with native bf16; otherwise fp32).")  # fmt: skip
@click.option("--channels-last", type=click.Choice(ON_OFF), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Threads decoding images into the in-memory cache (large folders).")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Algorithm setting (e.g. lr=0.02, min_p_share=0.3, loss_start=10); repeatable.")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out exactly.")
@click.option("--json", "as_json", is_flag=True, help="Print the selection summary as JSON on stdout.")
@common_options
@handle_errors
def train(annotation, out, compile_mode, overrides, resume, as_json, device, seed, quiet, **options) -> None:
    """Train a Co-Reg pair (or a baseline) on ANNOTATION (an annotate output) and pick one peer."""
    from coreg_edge.errors import UserError
    from coreg_edge.training.trainer import train as run_train

    if not resume and not annotation:
        raise UserError("ANNOTATION is required (or --resume --out RUN to continue a run)")
    if resume:
        _refuse_changes_on_resume(click.get_current_context(), out)
    coreg = parse_overrides(overrides)
    call = {"compile_mode": compile_mode, "device": device, "seed": seed, "coreg": coreg, **options}
    if resume:  # only what was typed now: a default must not override what the run stored (--amp off ...)
        from coreg_edge.recipe import parse_override

        given = {parse_override(pair)[0] for pair in overrides}
        call["coreg"] = {key: value for key, value in coreg.items() if key in given}
        typed = _typed(click.get_current_context()) | {"coreg"}
        call = {key: value for key, value in call.items() if key in typed}
    if "compile_mode" in call:
        call["compile"] = call.pop("compile_mode")
    summary = run_train(annotation, out, resume=resume, quiet=quiet, **call)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        echo(f"run folder: {out} (selected peer {summary['selected']})", quiet)


def _typed(ctx: click.Context) -> set[str]:
    """The parameters given on this command line (not click's defaults)."""
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }


def _refuse_changes_on_resume(ctx: click.Context, out: str) -> None:
    """--resume continues the stored run exactly: options that would change what it computes are an error
    (silently ignoring them would train something else than the user asked for)."""
    from coreg_edge.errors import UserError
    from coreg_edge.training import run_folder
    from coreg_edge.training.trainer import RESUME_OVERRIDES

    run_folder.read_config(out)  # first: is there a run to resume at all?

    allowed = RESUME_OVERRIDES | {"resume", "out", "quiet", "as_json", "compile_mode"}
    typed = _typed(ctx)
    given = [
        param.opts[0] if isinstance(param, click.Option) else param.name.upper()
        for param in ctx.command.params
        if param.name not in allowed and param.name in typed
    ]
    if (
        "--set" in given and run_folder.diverged(out) is not None
    ):  # the documented exception: a lower learning rate
        if all(pair.partition("=")[0].strip() == "lr" for pair in ctx.params["overrides"]):
            given.remove("--set")
    if given:
        raise UserError(
            f"--resume continues the run with its stored settings; drop {', '.join(given)} "
            "(only --device, --compile, --amp, --channels-last, --workers, --data may change; "
            "after a divergence also --set lr=...)"
        )


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """KEY=VALUE strings -> the full CoRegConfig as a dict, each value typed by the recipe's parser (one
    --set parser for train and run); the dataclass validates ranges."""
    from coreg_edge.algorithm import CoRegConfig
    from coreg_edge.errors import UserError
    from coreg_edge.recipe import parse_setting

    values = dict(parse_setting("train.coreg", pair) for pair in pairs)
    try:
        return CoRegConfig(**values).to_dict()
    except ValueError as exc:
        raise UserError(f"--set: {exc}") from exc
