"""`coreg-edge train`: an annotation file -> a run folder (both peers, metrics, the selected peer)."""

from __future__ import annotations

import json

import click

from coreg_edge.algorithm import CoRegConfig
from coreg_edge.cli.common import common_options, handle_errors, settings_options
from coreg_edge.errors import FollowerExit, UserError
from coreg_edge.logs import info
from coreg_edge.settings.train import RESUME_OVERRIDES, TrainSettings
from coreg_edge.utils import torchrun_rank


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
  coreg-edge train ann.npz --nproc 4 --batch-size 64 --out runs/4gpu
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint HOST:29500 -m coreg_edge train ann.npz --out runs/16gpu
"""
)
@click.argument("annotation", required=False)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@settings_options(TrainSettings)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Algorithm setting (e.g. lr=0.02, min_p_share=0.3, loss_start=10); repeatable.")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out exactly.")
@click.option("--json", "as_json", is_flag=True, help="Print the selection summary as JSON on stdout.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes on this machine (one per GPU), as torchrun --standalone --nproc_per_node N; "
              "--batch-size is per process and the learning rate follows the global batch.")  # fmt: skip
@common_options
@handle_errors
def train(annotation, out, overrides, resume, as_json, nproc, device, seed, quiet, **options) -> None:
    """Train a Co-Reg pair (or a baseline) on ANNOTATION (an annotate output) and pick one peer."""
    try:
        _train(annotation, out, overrides, resume, as_json, nproc, device, seed, quiet, options)
    except UserError as exc:
        if torchrun_rank() not in (None, 0):  # every rank meets the same error: rank 0 alone prints it
            raise FollowerExit(exc.exit_code) from exc
        raise


def _train(annotation, out, overrides, resume, as_json, nproc, device, seed, quiet, options) -> None:
    if nproc > 1 and torchrun_rank() is not None:
        raise UserError("--nproc starts its own processes: drop it under torchrun")
    if not resume and not annotation:
        raise UserError("ANNOTATION is required (or --resume --out RUN to continue a run)")
    stored = _refuse_changes_on_resume(click.get_current_context(), out) if resume else None
    coreg = parse_overrides(overrides)
    if nproc > 1:  # the command line, the folder and the annotation are checked here once, then each worker runs it
        # lazy: CLI start-up (torch-side modules); tests patch training.launch.launch
        from coreg_edge.training.launch import check_nproc, launch, worker_args
        from coreg_edge.training.trainer import check_before_launch

        # the device the workers will use: typed now, else a resumed run's own
        if stored is not None and "device" not in _typed(click.get_current_context()):
            device = str(stored.get("settings", {}).get("device") or device)
        check_nproc(nproc, device)
        check_before_launch(annotation, out, resume)
        argv = worker_args(click.get_current_context().find_root().obj["argv"])
        raise SystemExit(launch(nproc, argv, device))
    from coreg_edge.training.trainer import train as run_train  # lazy: CLI start-up (torch)

    call = {"device": device, "seed": seed, "coreg": coreg, **options}
    if resume:  # only what was typed now: a default must not override what the run stored (--amp off ...)
        from coreg_edge.recipe import parse_override  # lazy: CLI start-up

        given = {parse_override(pair)[0] for pair in overrides}
        call["coreg"] = {key: value for key, value in coreg.items() if key in given}
        typed = _typed(click.get_current_context()) | {"coreg"}
        call = {key: value for key, value in call.items() if key in typed}
    summary = run_train(annotation, out, resume=resume, quiet=quiet, **call)
    if torchrun_rank() not in (None, 0):
        return  # rank 0 prints for the run
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        info(f"run folder: {out} (selected peer {summary['selected']})")


def _typed(ctx: click.Context) -> set[str]:
    """The parameters given on this command line (not click's defaults)."""
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }


def _refuse_changes_on_resume(ctx: click.Context, out: str) -> dict:
    """--resume continues the stored run exactly: options that would change what it computes are an error
    (silently ignoring them would train something else than the user asked for). Returns the run's config."""
    from coreg_edge.training import run_folder  # lazy: CLI start-up (the torch-side training layer)

    config = run_folder.read_config(out)  # first: is there a run to resume at all?

    allowed = RESUME_OVERRIDES | {"resume", "out", "quiet", "as_json", "nproc"}
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
        may = [param.opts[0] for param in ctx.command.params if param.name in RESUME_OVERRIDES | {"nproc"}]
        raise UserError(
            f"--resume continues the run with its stored settings; drop {', '.join(given)} "
            f"(only {', '.join(may)} may change; after a divergence also --set lr=...)"
        )
    return config


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """KEY=VALUE strings -> the full CoRegConfig as a dict, each value typed by the recipe's parser (one
    --set parser for train and run); the dataclass validates ranges."""
    from coreg_edge.recipe import parse_setting  # lazy: CLI start-up (--help imports every command module)

    values = dict(parse_setting("train.coreg", pair) for pair in pairs)
    try:
        return CoRegConfig(**values).to_dict()
    except ValueError as exc:
        raise UserError(f"--set: {exc}") from exc
