"""runs.FinishedRun: a run folder read once, asked by labels, report and export for its config, selection,
preprocessing and networks (checked against the run folder's own readers, training/run_folder.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from coreg_edge.errors import UserError
from coreg_edge.runs import FinishedRun, PeerEnsemble
from coreg_edge.training import run_folder as rf


def test_it_reads_what_the_run_folder_holds(trained_run: Path):
    run = FinishedRun(trained_run)
    assert run.config == rf.read_config(trained_run)
    assert run.class_names == rf.read_config(trained_run)["class_names"]
    assert run.preprocess == rf.preprocess_config(trained_run)
    assert run.resolve_peer("selected") == "a"  # the fixture's selection.json
    assert [run.resolve_peer(p) for p in ("a", "b", "ensemble")] == ["a", "b", "ensemble"]
    assert run.reject_threshold("a") is None  # the fixture calibrated none


def test_each_network_is_loaded_once_and_selected_is_its_peer(trained_run: Path):
    run = FinishedRun(trained_run)
    assert run.network("selected") is run.network("a")
    assert run.network("a") is not run.network("b")
    ensemble = run.network("ensemble")
    assert isinstance(ensemble, PeerEnsemble) and not ensemble.training
    images = torch.randn(3, run.preprocess.channels, *run.preprocess.input_size)
    with torch.no_grad():
        expected = (run.network("a")(images) + run.network("b")(images)) / 2
        assert torch.allclose(ensemble(images), expected, atol=1e-6)


def test_probabilities_are_the_networks_softmax_on_the_evaluation_view(trained_run: Path):
    from coreg_edge.data import open_source
    from coreg_edge.training.image_store import decode_to_memory

    run = FinishedRun(trained_run)
    source = open_source("digits:test")
    indices = np.arange(10)
    probs = run.probabilities(source, indices, peer="b", batch_size=4, quiet=True)
    assert probs.shape == (10, len(run.class_names)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    pre = run.preprocess
    images = decode_to_memory(source, indices, pre, quiet=True).float() / 255
    mean, std = (torch.tensor(v).reshape(1, -1, 1, 1) for v in (pre.mean, pre.std))
    with torch.no_grad():
        expected = rf.load_network(trained_run, "b")((images - mean) / std).softmax(1).numpy()
    assert np.allclose(probs, expected, atol=1e-5)
    assert run.probabilities(source, indices[:0], quiet=True).shape == (0, len(run.class_names))


def test_a_folder_that_is_no_run_is_refused_on_opening(tmp_path: Path):
    with pytest.raises(UserError, match="no such run folder"):
        FinishedRun(tmp_path / "missing")
    with pytest.raises(UserError, match="not a finished coreg-edge run"):
        FinishedRun(tmp_path)


def test_an_unfinished_run_opens_and_says_what_to_do_when_its_selection_is_asked(trained_run: Path, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(trained_run, run_path)
    (run_path / rf.SELECTION).unlink()
    run = FinishedRun(run_path)  # the config is there: it opens
    assert run.network("a") is not None  # an explicit peer needs no selection
    with pytest.raises(UserError, match="training has not finished"):
        run.resolve_peer("selected")


def test_a_bad_selection_or_peer_name_is_one_line(trained_run: Path, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(trained_run, run_path)
    (run_path / rf.SELECTION).write_text(json.dumps({"selected": "c"}))
    run = FinishedRun(run_path)
    with pytest.raises(UserError, match="'selected' is 'c', not a or b"):
        run.resolve_peer("selected")
    with pytest.raises(UserError, match="--peer must be one of"):
        run.network("z")
    rf.peer_file(run_path, "b").unlink()
    with pytest.raises(UserError, match="--peer ensemble needs both peers.*use --peer a instead"):
        FinishedRun(run_path).network("ensemble")


def test_its_spec_is_what_an_exported_file_says_of_itself(trained_run: Path):
    run = FinishedRun(trained_run)
    spec = run.spec("selected")
    assert spec.class_names == tuple(run.class_names) and spec.preprocess == run.preprocess
    assert spec.info == {"backbone": "test_resnet", "method": "supervised", "peer": "a",
                         "annotator": {"kind": "synthetic"}, "test_accuracy": None, "reject_threshold": None}  # fmt: skip
    assert run.spec("ensemble").info["peer"] == "ensemble"
