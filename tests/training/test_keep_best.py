"""Through the trainer: the automatic choices are made and said, and a run whose held-out score falls sharply
rolls back, stops and ships its best epoch (training/guard.py), with selection.json saying which and why."""

from __future__ import annotations

import dataclasses
import json

import torch

from coreg_edge.training import methods
from coreg_edge.training import run_folder as rf
from coreg_edge.training.baselines import baseline_phase
from coreg_edge.training.trainer import train

TINY = {"backbone": "test_resnet", "image_size": 8, "quiet": True, "eval_data": "digits:test"}


def test_defaults_are_chosen_stored_and_said(digits_annotation, tmp_path, capfd):
    run = tmp_path / "run"
    train(digits_annotation, run, backbone="test_resnet", epochs=6, eval_data="digits:test")
    config = json.loads((run / rf.CONFIG).read_text())
    chosen = config["chosen"]
    assert set(chosen) == {"batch_size", "lr", "strong_augment", "warmup"}
    assert config["settings"]["batch_size"] == chosen["batch_size"]["value"] == 32  # 1,365 training items
    assert config["settings"]["coreg"]["lr"] == chosen["lr"]["value"] == 0.05
    assert chosen["strong_augment"]["value"] == "weak" and "8 px" in chosen["strong_augment"]["why"]
    err = capfd.readouterr().err
    assert "chosen: batch 32 (1365 items" in err and "warm-up auto, 1-3" in err
    selection = json.loads((run / rf.SELECTION).read_text())
    assert 1 <= selection["warmup_epochs"] <= 3
    phases = [r["phase"] for r in rf.read_metrics(run)]
    assert phases == ["warmup"] * selection["warmup_epochs"] + ["coreg"] * (6 - selection["warmup_epochs"])
    if selection["warmup_epochs"] < 3:  # it ended on the signal, and says so
        assert "flattened" in config["warmup_ended"]["why"]


def test_a_set_value_is_not_chosen(digits_annotation, tmp_path):
    run = tmp_path / "run"
    train(digits_annotation, run, method="proden", epochs=1, batch_size=64, strong_augment="cutout",
          coreg={"lr": 0.02}, **TINY)  # fmt: skip
    config = json.loads((run / rf.CONFIG).read_text())
    assert config["chosen"] == {} and config["settings"]["batch_size"] == 64
    assert config["settings"]["coreg"]["lr"] == 0.02


def _sabotaged_epoch(inputs: methods.EpochInputs) -> dict:
    """PRODEN, except that from epoch 2 on the classifier predicts class 0 for every image."""
    as_proden = dataclasses.replace(inputs, settings=dataclasses.replace(inputs.settings, method="proden"))
    record = baseline_phase(as_proden)
    if inputs.epoch >= 2:
        with torch.no_grad():
            head = inputs.peers[0].net.classifier
            head.weight.zero_()
            head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(0), head.bias.numel()).float() * 10)
    return record


def test_a_sharp_fall_rolls_back_then_stops_and_ships_the_best_epoch(digits_annotation, tmp_path, monkeypatch):
    row = methods.Method("sabotaged", "test", _sabotaged_epoch,
                         init_peer="coreg_edge.training.baselines:initial_soft_targets", rank=9)  # fmt: skip
    monkeypatch.setitem(methods._METHODS, "sabotaged", row)
    run = tmp_path / "run"
    summary = train(digits_annotation, run, method="sabotaged", epochs=10, **TINY)
    metrics = rf.read_metrics(run)
    actions = [r.get("guard", {}).get("action") for r in metrics]
    # each failure is acted on after two failing epochs in a row: two rollbacks, then it stops
    assert actions == [None, None, None, "rollback", None, "rollback", None, "stop"]
    assert metrics[4]["lr"] < metrics[3]["lr"] * 0.6  # the learning rate was halved after the rollback
    assert summary["stopped_early"]["epoch"] == 7 and summary["epochs_trained"] == 8
    kept = summary["kept"]["a"]
    assert kept["source"] == "best" and kept["epoch"] in (0, 1)
    best_record = metrics[kept["epoch"]]
    # the shipped weights are the best epoch's: the same test accuracy as that epoch's line
    assert summary["test_accuracy"]["a"] == best_record["test_accuracy"]["a"]
    assert metrics[7]["test_accuracy"]["a"] < 0.15 < summary["test_accuracy"]["a"] - 0.2  # one class: ~0.1


def test_no_keep_best_trains_to_the_end(digits_annotation, tmp_path, monkeypatch):
    row = methods.Method("sabotaged", "test", _sabotaged_epoch,
                         init_peer="coreg_edge.training.baselines:initial_soft_targets", rank=9)  # fmt: skip
    monkeypatch.setitem(methods._METHODS, "sabotaged", row)
    run = tmp_path / "run"
    summary = train(digits_annotation, run, method="sabotaged", epochs=4, keep_best=False, **TINY)
    assert summary["kept"] is None and summary["epochs_trained"] == 4
    assert summary["test_accuracy"]["a"] < 0.15  # the sabotaged last epoch is shipped


def test_nothing_held_out_trains_and_keeps_the_last_weights(digits_annotation, tmp_path):
    summary = train(digits_annotation, tmp_path / "run", method="proden", epochs=2, holdout=0.0, **TINY)
    assert summary["kept"]["a"] == {"epoch": 1, "source": "final", "why": "no held-out items to score them"}


def test_min_lr_above_the_chosen_lr_is_one_clear_error(digits_annotation, tmp_path):
    import pytest

    from coreg_edge.errors import UserError

    with pytest.raises(UserError, match=r"min_lr=0.08 is above the chosen lr 0.05 .*; set lr too"):
        train(digits_annotation, tmp_path / "run", method="proden", epochs=1, coreg={"min_lr": 0.08}, **TINY)


def test_resume_refuses_a_run_of_an_older_version(digits_annotation, tmp_path):
    import pytest

    from coreg_edge.errors import UserError

    run = tmp_path / "run"
    train(digits_annotation, run, method="proden", epochs=1, **TINY)
    config = json.loads((run / rf.CONFIG).read_text())
    del config["chosen"]
    config["coreg_edge_version"] = "0.3.0"
    (run / rf.CONFIG).write_text(json.dumps(config))
    with pytest.raises(UserError, match="started by coreg-edge 0.3.0, which chose its defaults by other rules"):
        train(None, run, resume=True, quiet=True)
