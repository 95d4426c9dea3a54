"""Stage settings: the settings fields each library function gets, from the recipe."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coreg_edge.annotate.registry import claimed_options, get_annotator
from coreg_edge.pipeline.fingerprints import _without
from coreg_edge.pipeline.layout import TEMPLATES_FILE
from coreg_edge.recipe import Recipe
from coreg_edge.settings.annotate import AnnotateSettings
from coreg_edge.settings.fields import execution_keys, unset_keys


def annotate_call(recipe: Recipe, run: Path) -> dict[str, Any]:
    """AnnotateSettings fields (data and out apart), from [data], [classes], [annotate] and the top level."""
    data = recipe.data
    options = recipe.section("annotate")
    templates = options.get("templates")
    if isinstance(templates, list):  # inline list: annotate() reads template sets or files
        options["templates"] = str(run / TEMPLATES_FILE)
    classes = recipe.section("classes")
    call = {
        **options,
        "classes": classes.get("names"),
        "wording": classes.get("wording"),  # prompts only: the model answers with the plain names
        "seed": recipe.seed,
        "device": recipe.device,
        "download": bool(data.get("download", False)),
        "data_dir": data.get("data_dir"),
        "channels": recipe.section("train").get("channels"),
    }
    return call


def _annotate_settings(recipe: Recipe, call: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies the annotate stage's output: the settings that change this annotator's labels (its
    registry row's options, and the fields no annotator claims), without the execution ones."""
    settings = AnnotateSettings(**call)
    annotator = get_annotator(settings.annotator)
    others = claimed_options() - set(annotator.options)  # run folders of other annotators keep theirs
    skipped = others | unset_keys(settings)
    resolved = {k: v for k, v in dataclasses.asdict(settings).items() if k not in skipped}
    resolved["data"] = recipe.data["train"]
    if "templates" in resolved:  # an inline list is what identifies the prompts, not the file it is written to
        resolved["templates"] = recipe.section("annotate").get("templates", resolved["templates"])
    resolved.update(annotator.fingerprint_extra(settings))
    return _without(resolved, execution_keys(AnnotateSettings))


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
    """Keyword arguments for export_run() (ExportSettings fields): [export], the seed, and the device
    quantization-aware fine-tuning runs on."""
    return {**recipe.section("export"), "seed": recipe.seed, "device": recipe.device}


def bench_call(recipe: Recipe) -> dict[str, Any]:
    return {**recipe.section("bench"), "seed": recipe.seed}
