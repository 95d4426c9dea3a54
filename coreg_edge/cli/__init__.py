"""The `coreg-edge` command line: a click group whose commands load lazily.

Each command lives in its own module and imports heavy libraries (torch, open_clip, timm) only inside
its body, so `--help`, `predict`, `bench` and `info` on an ONNX file work on a device install.
"""

from __future__ import annotations

import importlib
import sys

import click

from coreg_edge import __version__

# name -> "module:attribute"; a command is imported only when it is invoked or listed in --help.
COMMANDS: dict[str, str] = {
    "annotate": "coreg_edge.cli.annotate:annotate",
    "info": "coreg_edge.cli.info:info",
    "labels": "coreg_edge.cli.labels:labels",
    "train": "coreg_edge.cli.train:train",
    "predict": "coreg_edge.cli.predict:predict",
    "bench": "coreg_edge.cli.bench:bench",
    "export": "coreg_edge.cli.export:export",
    "report": "coreg_edge.cli.report:report",
    "review": "coreg_edge.cli.review:review",
    "run": "coreg_edge.cli.run:run",
    "demo": "coreg_edge.cli.run:demo",
}


# click >= 8.2 raises this for a bare group or command (click 8.1 printed the help itself)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class LazyGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        """Usage errors as one line on stderr, as every other error (click prints usage and a hint first)."""
        args = list(sys.argv[1:] if args is None else args)
        extra.setdefault("obj", {"argv": args})  # the words typed: `train --nproc N` hands them to its workers
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a bare command: its help, as click shows it
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.UsageError as exc:
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"Error: {' '.join(exc.format_message().split())}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="coreg-edge")
def cli() -> None:
    """Label-free edge classifiers: annotate with CLIP, train Co-Reg, export ONNX int8, run on a device.

    \b
    Quick start (offline, minutes on a laptop CPU):
      coreg-edge demo
    \b
    Stages, one by one:
      coreg-edge annotate DATA --classes a,b,c --out ann.npz
      coreg-edge train ann.npz --backbone resnet18 --out runs/NAME
      coreg-edge export runs/NAME --int8 --out dist/NAME
      coreg-edge predict dist/NAME/model.int8.onnx IMAGE...
      coreg-edge bench dist/NAME/model.int8.onnx --vs dist/NAME/model.onnx
      coreg-edge report runs/NAME                (pictures: curves, confusion, formats)
    \b
    All of them from a recipe, resumable:
      coreg-edge run cifar10 --download
    """


def main() -> None:
    cli(prog_name="coreg-edge")
