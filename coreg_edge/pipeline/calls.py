"""Stage settings: the exact keyword arguments each library function gets, from the recipe."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.pipeline.fingerprints import _without
from coreg_edge.pipeline.layout import TEMPLATES_FILE
from coreg_edge.recipe import Recipe


def _defaults(func: Callable[..., Any]) -> dict[str, Any]:
    """Keyword defaults of a library function: recipes leave keys out, fingerprints record the value used."""
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _accepted(func: Callable[..., Any], options: Mapping[str, Any], section: str) -> dict[str, Any]:
    """Fail in one line when a recipe key is not an argument of the installed library function."""
    params = inspect.signature(func).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise UserError(
            f"{section}.{unknown[0]}: not supported by this version's {func.__name__}() "
            f"(it takes {', '.join(n for n in params if params[n].kind is inspect.Parameter.KEYWORD_ONLY)})"
        )
    return dict(options)


def annotate_call(recipe: Recipe, run: Path) -> dict[str, Any]:
    """Keyword arguments for annotate() (data and out apart), from [data], [classes], [annotate]."""
    data = recipe.data
    options = recipe.section("annotate")
    templates = options.get("templates")
    if isinstance(templates, list):  # inline list: annotate() reads template sets or files
        options["templates"] = str(run / TEMPLATES_FILE)
    classes = recipe.section("classes")
    call = {
        **options,
        "classes": classes.get("names"),
        "seed": recipe.seed,
        "device": recipe.device,
        "download": bool(data.get("download", False)),
        "data_dir": data.get("data_dir"),
        "channels": recipe.section("train").get("channels"),
    }
    return call


def _annotate_settings(recipe: Recipe, call: Mapping[str, Any]) -> dict[str, Any]:
    from coreg_edge.annotate.api import annotate
    from coreg_edge.annotate.simulated import OPTION_NAMES, describe_knobs, resolve_knobs

    resolved = {**_defaults(annotate), **call, "data": recipe.data["train"]}
    resolved["wording"] = recipe.section("classes").get("wording")
    resolved["templates"] = recipe.section("annotate").get("templates", resolved["templates"])
    resolved.pop("out", None)
    resolved.pop("batch_size", None)  # how many images per forward pass: not what the labels are
    # Only the keys that change this annotator's labels: run folders of the other annotators keep theirs.
    clip_keys = ("clip_model", "pretrained", "mode", "k", "ratio", "templates", "wording")
    simulated_keys = ("preset", *OPTION_NAMES.values())
    unused = {
        "clip": ("partial_rate", "noise_rate", *simulated_keys),
        "synthetic": (*clip_keys, *simulated_keys),
        "simulated": (*clip_keys, "partial_rate", "noise_rate"),
    }[resolved["annotator"]]
    for key in unused:
        resolved.pop(key, None)
    if resolved["annotator"] == "simulated":  # the knobs used, so a retuned preset re-runs the stage
        knobs = resolve_knobs(resolved["preset"], {key: resolved[key] for key in OPTION_NAMES.values()})
        resolved.update(describe_knobs(knobs))
    return _without(resolved)


def train_call(recipe: Recipe) -> dict[str, Any]:
    """Keyword arguments for train() (TrainSettings fields), from [train], [train.coreg] and [data]."""
    data = recipe.data
    options = recipe.section("train")
    options.pop("coreg", None)
    return {
        **options,
        "coreg": recipe.section("train.coreg"),
        "seed": recipe.seed,
        "device": recipe.device,
        "eval_data": data.get("eval"),
        "val_data": data.get("val"),
        "download": bool(data.get("download", False)),
    }


def export_call(recipe: Recipe) -> dict[str, Any]:
    return {**recipe.section("export"), "seed": recipe.seed}


def bench_call(recipe: Recipe) -> dict[str, Any]:
    bench = recipe.section("bench")
    bench.setdefault("batch_sizes", [1, 32])  # a recipe's default (docs/FORMATS.md), shorter than the CLI's
    return {**bench, "seed": recipe.seed}


def _annotate(recipe: Recipe, call: dict[str, Any], out: Path, quiet: bool) -> None:
    """annotate() with the recipe's class wording (prompts only; the model answers with the plain names)."""
    from coreg_edge.annotate.api import annotate

    wording = recipe.section("classes").get("wording")
    annotate(recipe.data["train"], out, wording=wording, quiet=quiet, **call)
