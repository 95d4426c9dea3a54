"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from coreg_edge.choices import DEVICES
from coreg_edge.errors import UserError

# What the `train` extra brings; the device install (numpy, onnxruntime, pillow, click) lacks these.
TRAIN_EXTRA_MODULES = {
    "torch",
    "torchvision",
    "timm",
    "open_clip",
    "onnx",
    "onnxscript",
    "sklearn",
    "safetensors",
}


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--device, --seed and --quiet, identical on every command."""
    func = click.option(
        "--quiet", "-q", is_flag=True, help="No progress bars or chatter; errors still print."
    )(func)
    func = click.option(
        "--seed", type=int, default=0, show_default=True, help="Random seed (reproducible on CPU)."
    )(func)
    func = click.option(
        "--device",
        type=click.Choice(DEVICES),
        default="auto",
        show_default=True,
        help="Where to compute; auto = cuda when available.",
    )(func)
    return func


# onnxruntime's intra-op thread count, the same option on every device command.
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="onnxruntime intra-op threads [default: physical cores].",
)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn UserError (and Ctrl-C) into one line on stderr and a non-zero exit, never a traceback.

    Unexpected exceptions also print one line; COREG_EDGE_DEBUG=1 re-raises them for a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import warnings

        warnings.showwarning = _one_line_warning
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except ImportError as exc:
            if (exc.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
                _unexpected(exc)
            command = click.get_current_context().info_name
            click.echo(
                f"Error: coreg-edge {command} needs the training extras ({exc.name} is not installed): "
                "pip install 'coreg-edge[train]'",
                err=True,
            )
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            _unexpected(exc)

    return wrapper


def _unexpected(exc: BaseException) -> None:
    """One line for a bug or an unforeseen failure; COREG_EDGE_DEBUG=1 re-raises for the traceback."""
    if os.environ.get("COREG_EDGE_DEBUG"):
        raise exc
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    click.echo(
        f"Error: unexpected {type(exc).__name__}: {first} (set COREG_EDGE_DEBUG=1 for the traceback)",
        err=True,
    )
    sys.exit(1)


def echo(message: str, quiet: bool = False) -> None:
    """Chatter goes to stderr so stdout stays scriptable (JSON, tables)."""
    if not quiet:
        click.echo(message, err=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    click.echo(f"Warning: {message}", err=True)
