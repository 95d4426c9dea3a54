"""Divergence and early failures lead out: one line naming --set lr, honest about checkpoints, resumable."""

from __future__ import annotations

import json

from coreg_edge.training import run_folder as rf

TINY = ["--backbone", "test_resnet", "--image-size", "8", "--batch-size", "64", "-q"]


def _proden(annotation, run, epochs: int) -> list[str]:
    """`coreg-edge train` arguments for a short PRODEN run into `run`."""
    return ["train", str(annotation), "--out", str(run), "--method", "proden", "--epochs", str(epochs), *TINY]


def _last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def _diverge_at(monkeypatch, epoch_to_fail: int) -> None:
    """The loss watch reports a NaN at `epoch_to_fail` (the real watch, fed a real NaN)."""
    from coreg_edge.training.context import FiniteWatch

    real = FiniteWatch.add

    def add(self, loss, step):
        real(self, loss * float("nan") if self.epoch == epoch_to_fail else loss, step)

    monkeypatch.setattr(FiniteWatch, "add", add)


def test_a_huge_learning_rate_is_one_line_naming_the_real_option(runner, cli, digits_annotation, tmp_path):
    run = tmp_path / "coreg"
    args = ["train", str(digits_annotation), "--out", str(run), "--epochs", "3", "--warmup", "1"]
    result = runner.invoke(cli, [*args, "--set", "lr=1e12", "--set", "queue_size=256", *TINY])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = _last_line(result)
    assert line.startswith("Error: training diverged:") and "--set lr=" in line
    assert "Input X contains NaN" not in result.output and "--lr" not in line.replace("--set lr", "")
    record = rf.diverged(run)
    assert record is not None and record["lr"] == 1e12
    assert record["checkpoint"] is (run / rf.CHECKPOINT).exists()
    assert ("no epoch was saved" in line) is not record["checkpoint"]
    assert ("checkpoint of the last good epoch is kept" in line) is record["checkpoint"]


def test_no_saved_epoch_then_the_same_command_starts_over(
    runner, cli, digits_annotation, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    args = _proden(digits_annotation, run, 2)
    _diverge_at(monkeypatch, 0)
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "no epoch was saved" in _last_line(result)
    assert "kept" not in _last_line(result) and not (run / rf.CHECKPOINT).exists()
    # --resume has nothing to resume, and says what leads out
    resumed = runner.invoke(cli, ["train", "--resume", "--out", str(run), "-q"])
    assert resumed.exit_code == 1 and "without --resume to start it over" in _last_line(resumed)
    monkeypatch.undo()
    result = runner.invoke(cli, args)  # the same command: starts over instead of "already holds a run"
    assert result.exit_code == 0, result.output
    assert [m["epoch"] for m in rf.read_metrics(run)] == [0, 1] and rf.diverged(run) is None


def test_a_diverged_run_resumes_with_a_lower_learning_rate(
    runner, cli, digits_annotation, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    args = _proden(digits_annotation, run, 3)
    _diverge_at(monkeypatch, 1)
    result = runner.invoke(cli, args)
    line = _last_line(result)
    assert result.exit_code == 1 and "checkpoint of the last good epoch is kept" in line
    assert f"coreg-edge train --resume --out {run} --set lr=" in line
    monkeypatch.undo()
    resumed = runner.invoke(cli, ["train", "--resume", "--out", str(run), "--set", "lr=0.001", "-q"])
    assert resumed.exit_code == 0, resumed.output
    metrics = rf.read_metrics(run)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[0]["lr"] > 0.001 and all(m["lr"] <= 0.001 for m in metrics[1:])  # really used
    config = json.loads((run / rf.CONFIG).read_text())
    assert config["settings"]["coreg"]["lr"] == 0.001 and config["lr_changes"] == [
        {"after_divergence": True, "epoch": 1, "lr": 0.001}
    ]
    assert config["schedule"]["base_lr"] == 0.001  # the stored schedule is the one that ran
    assert rf.diverged(run) is None


def test_resume_still_refuses_a_new_learning_rate_without_a_divergence(
    runner, cli, digits_annotation, tmp_path
):
    run = tmp_path / "run"
    args = _proden(digits_annotation, run, 1)
    assert runner.invoke(cli, args).exit_code == 0
    resumed = runner.invoke(cli, ["train", "--resume", "--out", str(run), "--set", "lr=0.001", "-q"])
    assert resumed.exit_code == 1 and "drop --set" in _last_line(resumed)


def test_a_folder_that_is_not_ours_is_never_cleaned(runner, cli, digits_annotation, tmp_path):
    """Starting over deletes files only in a coreg-edge run folder that saved no epoch, nothing else."""
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    args = _proden(digits_annotation, folder, 1)
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and (folder / "config.json").read_text() == '{"model_type": "bert"}'
    (folder / "model.safetensors").write_bytes(b"weights")
    config = {"format_version": 1, "coreg_edge_version": "0.1.0", "method": "proden"}
    (folder / "config.json").write_text(json.dumps(config))  # ours, but beside a file that is not
    result = runner.invoke(cli, args)
    assert (
        result.exit_code == 1
        and (folder / "config.json").exists()
        and (folder / "model.safetensors").exists()
    )


def test_weights_that_turn_nan_are_never_checkpointed(runner, cli, digits_annotation, tmp_path, monkeypatch):
    import torch

    import coreg_edge.training.baselines as trainer  # the baselines' epoch function

    real = trainer.baseline_epoch

    def poison(ctx, peer, method, epoch, rows):
        loss = real(ctx, peer, method, epoch, rows)
        if epoch == 1:
            with torch.no_grad():
                next(peer.net.parameters()).fill_(float("nan"))  # a finite loss, NaN weights
        return loss

    monkeypatch.setattr(trainer, "baseline_epoch", poison)
    run = tmp_path / "run"
    args = _proden(digits_annotation, run, 3)
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "weights became NaN" in _last_line(result)
    state = torch.load(run / rf.CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1  # the last good epoch, not the poisoned one


def test_resume_keeps_what_the_run_stored_unless_typed_again(runner, cli, digits_annotation, tmp_path):
    """A click default (--amp auto) must not replace a stored --amp off on resume."""
    run = tmp_path / "run"
    args = _proden(digits_annotation, run, 2)
    assert runner.invoke(cli, [*args, "--amp", "off", "--workers", "1"]).exit_code == 0
    (run / rf.SELECTION).unlink()
    assert runner.invoke(cli, ["train", "--resume", "--out", str(run), "-q"]).exit_code == 0
    settings = json.loads((run / rf.CONFIG).read_text())["settings"]
    assert settings["amp"] == "off" and settings["workers"] == 1
    assert runner.invoke(cli, ["train", "--resume", "--out", str(run), "--workers", "0", "-q"]).exit_code == 0
    assert json.loads((run / rf.CONFIG).read_text())["settings"]["workers"] == 0  # typed: taken
