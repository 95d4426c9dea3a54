"""Options and error handling shared by every command."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from coreg_edge.choices import DEVICES
from coreg_edge.errors import UserError
from coreg_edge.logs import quieted
from coreg_edge.settings.fields import DEVICE_HELP, SEED_HELP, cli_flag, field_kinds, option_fields

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
    """--device, --seed (the settings' shared fields) and --quiet, identical on every command."""
    func = click.option(
        "--quiet", "-q", is_flag=True, help="No progress bars or chatter; errors still print."
    )(func)
    func = click.option("--seed", type=int, default=0, show_default=True, help=SEED_HELP)(func)
    func = click.option(
        "--device", type=click.Choice(DEVICES), default="auto", show_default=True, help=DEVICE_HELP
    )(func)
    return func


class LiveChoice(click.Choice):
    """A choice read from a registry when asked (--method: a registered method is a choice at once)."""

    def __init__(self, provider: Callable[[], tuple[Any, ...]]) -> None:
        self.provider = provider
        super().__init__(provider())

    @property
    def choices(self) -> tuple[Any, ...]:
        return self.provider()

    @choices.setter
    def choices(self, value: object) -> None:  # click.Choice.__init__ assigns; the registry decides
        pass


def _comma_list(item: type) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or isinstance(value, tuple):
            return value
        try:
            return tuple(item(part.strip()) for part in str(value).split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"expected values separated by commas, e.g. 1,8,32 (got {value!r})") from None

    return parse


def _click_attrs(name: str, spec: Any, default: Any, kind: str) -> tuple[str, dict[str, Any]]:
    """The flag and click.option keywords of one settings field."""
    flag = cli_flag(name, spec)
    help_text = spec.help if spec.range is None else f"{spec.help}  [{spec.range.short()}]".strip()
    attrs: dict[str, Any] = {"help": help_text, "metavar": spec.metavar}
    allowed = spec.allowed()
    if kind == "bool":
        if default is False:
            attrs["is_flag"] = True
        else:  # on by default, or unset (None: the run decides): both spellings
            flag = f"{flag}/--no-{flag[2:]}"
    elif callable(spec.choices):
        attrs["type"] = LiveChoice(spec.choices)
    elif kind.startswith("list[") and allowed is not None:  # several of the choices, comma-separated
        attrs["callback"] = _comma_list(str)
        attrs["help"] = f"{help_text}  [each one of: {', '.join(map(str, allowed))}]"
        default = ",".join(map(str, default)) if isinstance(default, tuple) else default
    elif allowed is not None:
        attrs["type"] = click.Choice([str(c) for c in allowed])
        if kind == "int":  # click compares text: back to the field's number
            attrs["callback"] = lambda ctx, param, value: None if value is None else int(value)
    elif kind.startswith("list["):
        attrs["callback"] = _comma_list({"list[int]": int, "list[float]": float}.get(kind, str))
        default = ",".join(map(str, default)) if isinstance(default, tuple) else default
    else:
        attrs["type"] = {"int": int, "float": float}.get(kind, str)
    attrs.update(default=default, show_default=default is not None and default is not False)
    return flag, attrs


def settings_options(
    cls: type, *, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One click option per field of a settings dataclass (coreg_edge/settings/fields.py): flag, type,
    default, choices and help with the range, all from the field. Values are checked by the dataclass
    itself, so the CLI, a recipe and a notebook get the same message. --device/--seed: common_options."""
    kinds = field_kinds(cls)
    options = []
    for field, spec in option_fields(cls):
        wanted = field.name not in skip and (only is None or field.name in only)
        if spec.cli and not spec.common and wanted:
            default = None if field.default is dataclasses.MISSING else field.default
            kind = (kinds[field.name] or ("str",))[0]
            flag, attrs = _click_attrs(field.name, spec, default, kind)
            options.append(click.option(flag, field.name, **attrs))

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for add in reversed(options):
            func = add(func)
        return func

    return decorate


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn UserError (and Ctrl-C) into one line on stderr and a non-zero exit, never a traceback.

    Unexpected exceptions also print one line; COREG_EDGE_DEBUG=1 re-raises them for a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _one_line_warning
        try:
            with quieted(bool(kwargs.get("quiet"))):  # -q: the progress lines of every stage (coreg_edge/logs.py)
                return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except UserError as exc:
            if getattr(exc, "quiet", False):
                sys.exit(exc.exit_code)  # a torchrun rank other than 0 stopping with the run: rank 0 said why
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


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    click.echo(f"Warning: {message}", err=True)
