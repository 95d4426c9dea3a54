"""Annotators by registry: a new annotator is one function and one row (annotate/registry.py)."""

from __future__ import annotations

import numpy as np
import pytest

from coreg_edge.annotate import annotate, registry
from coreg_edge.annotate.job import AnnotateJob, AnnotatorResult
from coreg_edge.annotation_file import load
from coreg_edge.errors import UserError


def _nearest_two(job: AnnotateJob) -> AnnotatorResult:
    """A toy annotator: every item's candidate set is its true class and the next one."""
    n, c = len(job.source), len(job.class_names)
    candidates = np.zeros((n, c), dtype=bool)
    candidates[np.arange(n), job.labels] = True
    candidates[np.arange(n), (job.labels + 1) % c] = True
    return AnnotatorResult(candidates, np.zeros((n, 0), np.int16), np.zeros((n, 0), np.float32), [],
                           {"kind": "nearest-two"})  # fmt: skip


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(registry, "_ANNOTATORS", dict(registry._ANNOTATORS))  # undone after the test
    return registry.register_annotator(
        registry.Annotator("nearest-two", "true class and the next", protocol=_nearest_two, needs_labels=True)
    )


def test_a_registered_annotator_is_a_choice_and_annotates(toy, runner, cli, tmp_path):
    assert registry.annotator_names()[:3] == ("clip", "synthetic", "simulated")
    assert "nearest-two" in registry.annotator_names()
    out = tmp_path / "toy.npz"
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "nearest-two", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    ann = load(out)
    assert (ann.candidates.sum(1) == 2).all() and ann.stats()["coverage"] == 1.0
    assert ann.annotator["kind"] == "nearest-two"


def test_needs_labels_is_checked_for_every_annotator_that_says_so(toy, flat_folder):
    with pytest.raises(UserError, match="the nearest-two annotator needs ground truth"):
        annotate(str(flat_folder), annotator="nearest-two", classes="a,b", quiet=True)


def test_an_unknown_annotator_is_one_line_and_names_are_unique():
    with pytest.raises(UserError, match=r"^--annotator must be one of clip, synthetic, simulated"):
        annotate("digits", annotator="gpt", quiet=True)
    with pytest.raises(ValueError, match="registered already"):
        registry.register_annotator(registry.Annotator("clip", "again", protocol=_nearest_two))


def test_each_annotator_fingerprints_only_its_own_options(tmp_path):
    from coreg_edge.pipeline.calls import _annotate_settings, annotate_call
    from coreg_edge.recipe import load_recipe

    synthetic = load_recipe("digits")
    settings = _annotate_settings(synthetic, annotate_call(synthetic, tmp_path))
    assert {"partial_rate", "noise_rate"} <= set(settings) and not {"clip_model", "preset", "k"} & set(settings)
    simulated = load_recipe("digits", ["annotate.annotator=simulated"])
    knobs = _annotate_settings(simulated, annotate_call(simulated, tmp_path))
    assert knobs["shots"] == 10 and "partial_rate" not in knobs  # the preset's knobs, resolved (its describe)
    assert not {"device", "batch_size", "workers"} & set(knobs)  # execution settings never count
