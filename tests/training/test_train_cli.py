"""Training through the CLI on digits with a tiny backbone: metrics, checkpoints, resume, selection."""

from __future__ import annotations

import json

import pytest
import torch
from cli_errors import last_line, one_line_error
from safetensors.torch import load_file

from coreg_edge.training import run_folder as rf

TINY = ["--backbone", "test_resnet", "--image-size", "16", "--batch-size", "64", "-q"]


def _train(runner, cli, *args):
    result = runner.invoke(cli, ["train", *args])
    return result


def test_coreg_run_writes_metrics_checkpoint_selection(runner, cli, digits_annotation, tmp_path):
    run = tmp_path / "run"
    args = [str(digits_annotation), "--out", str(run), "--epochs", "3", "--warmup", "1", "--eval", "digits:test",
            "--set", "queue_size=256", "--json", *TINY]  # fmt: skip
    result = _train(runner, cli, *args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["selected"] in ("a", "b") and summary["reason"]
    assert set(summary["test_accuracy"]) == {"a", "b", "ensemble", "selected"}
    assert summary["test_accuracy"]["selected"] == summary["test_accuracy"][summary["selected"]]
    metrics = rf.read_metrics(run)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert [m["phase"] for m in metrics] == ["warmup", "coreg", "coreg"]
    coreg = metrics[2]["loss"]["a"]
    for key in ("cr", "prot", "cont", "total", "p_share", "pseudo_label_accuracy"):
        assert key in coreg
    assert 0.0 < coreg["p_share"] <= 1.0
    assert set(metrics[2]["test_accuracy"]) == {"a", "b", "ensemble"}
    assert "collapse" in metrics[2]
    assert rf.peer_file(run, "a").exists() and rf.peer_file(run, "b").exists()
    assert (run / rf.CHECKPOINT).exists()
    selection = json.loads((run / rf.SELECTION).read_text())
    assert selection["scores"]["a"]["hit_rate"] >= 0
    info = json.loads(runner.invoke(cli, ["info", str(run), "--json"]).stdout)
    assert info["method"] == "coreg" and info["backbone"] == "test_resnet" and info["epochs"] == 3
    assert info["selected"] == summary["selected"] and info["test_accuracy"] == summary["test_accuracy"]
    assert info["best_epoch"] in (0, 1, 2)
    network = rf.load_network(run, summary["selected"])
    assert network(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_resume_continues_exactly(runner, cli, digits_annotation, tmp_path, monkeypatch):
    args = [str(digits_annotation), "--epochs", "3", "--warmup", "1", "--set", "queue_size=128", *TINY_8PX]
    straight = tmp_path / "straight"
    assert _train(runner, cli, *args, "--out", str(straight)).exit_code == 0

    import coreg_edge.training.coreg_method as trainer  # the Co-Reg method's epoch calls coreg_epoch

    original = trainer.coreg_epoch
    calls = {"n": 0}

    def interrupt_in_epoch_2(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch index 2, peer a: after epochs 0 and 1 were checkpointed
            raise KeyboardInterrupt
        return original(*a, **kw)

    monkeypatch.setattr(trainer, "coreg_epoch", interrupt_in_epoch_2)
    resumed = tmp_path / "resumed"
    result = _train(runner, cli, *args, "--out", str(resumed))
    assert result.exit_code == 130
    assert "--resume" in result.stderr and not (resumed / rf.SELECTION).exists()
    assert len(rf.read_metrics(resumed)) == 2
    monkeypatch.setattr(trainer, "coreg_epoch", original)
    result = _train(runner, cli, "--resume", "--out", str(resumed), "-q")
    assert result.exit_code == 0, result.output
    for peer in ("a", "b"):
        w1, w2 = load_file(str(rf.peer_file(straight, peer))), load_file(str(rf.peer_file(resumed, peer)))
        for key in w1:
            assert torch.equal(w1[key], w2[key]), key
    assert rf.read_metrics(resumed)[-1]["holdout"] == rf.read_metrics(straight)[-1]["holdout"]


@pytest.mark.parametrize("method", ["proden", "cc", "ce-top1", "supervised"])
def test_baselines_train_one_network(runner, cli, digits_annotation, tmp_path, method):
    run = tmp_path / method
    args = [str(digits_annotation), "--out", str(run), "--epochs", "1", "--method", method, "--json", *TINY]
    result = _train(runner, cli, *args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["selected"] == "a" and summary["method"] == method
    assert rf.peer_file(run, "a").exists() and not rf.peer_file(run, "b").exists()


@pytest.mark.parametrize("method,batch", [("coreg", "22"), ("proden", "44")])
def test_a_last_batch_of_one_image_joins_the_one_before(runner, cli, digits_annotation, tmp_path, monkeypatch, method, batch):
    """1365 training items: the warm-up (batch 2 x 22) and a baseline (batch 44) end on one item, which
    BatchNorm cannot normalise in train mode (this failed before); it joins the batch before it."""
    from coreg_edge.training.context import Context

    sizes, batches = [], Context.batches

    def recording(self, indices, batch_size, min_size=1):
        for rows in batches(self, indices, batch_size, min_size):
            if min_size > 1:
                sizes.append(len(rows))
            yield rows

    monkeypatch.setattr(Context, "batches", recording)
    run = tmp_path / method
    args = [str(digits_annotation), "--out", str(run), "--epochs", "2", "--warmup", "1", "--method", method, *TINY]
    result = _train(runner, cli, *args, "--batch-size", batch, "--image-size", "8")  # 1 x 1 at the last BatchNorm
    assert result.exit_code == 0, result.output
    assert 45 in sizes and min(sizes) > 1 and sum(sizes) % 1365 == 0  # each epoch sees every item once


def test_context_batches_fold_a_short_last_batch():
    from types import SimpleNamespace

    from coreg_edge.training.context import Context

    def split(n: int, batch_size: int, min_size: int) -> list[int]:
        ctx = SimpleNamespace(generator=torch.Generator().manual_seed(0))
        rows = list(Context.batches(ctx, torch.arange(n), batch_size, min_size))
        if n:
            assert sorted(torch.cat(rows).tolist()) == list(range(n))  # every item once
        else:
            assert rows == []
        return [len(r) for r in rows]

    assert split(5, 2, 1) == [2, 2, 1] and split(5, 2, 2) == [2, 3]
    assert split(4, 2, 2) == [2, 2] and split(1, 2, 2) == [1] and split(0, 2, 2) == []
    assert split(7, 3, 3) == [3, 4]
    def order(min_size: int) -> torch.Tensor:
        ctx = SimpleNamespace(generator=torch.Generator().manual_seed(3))
        return torch.cat(list(Context.batches(ctx, torch.arange(9), 4, min_size)))

    assert torch.equal(order(1), order(2))  # the same shuffle: only the cut moves


def test_nan_loss_stops_with_clear_error_naming_the_real_option(runner, cli, digits_annotation, tmp_path):
    run = tmp_path / "nan"
    args = [
        str(digits_annotation),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--method",
        "cc",
        "--set",
        "lr=1e30",
        *TINY,
    ]
    result = _train(runner, cli, *args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss became" in lines[0] and "--set lr=0.01" in lines[0]
    # no epoch finished: the message must not claim a kept checkpoint (the tour found it did)
    assert "no epoch was saved" in lines[0] and not (run / rf.CHECKPOINT).exists()
    assert not (run / rf.SELECTION).exists()


def test_train_bad_input(runner, cli, digits_annotation, class_folder, tmp_path):
    run = tmp_path / "r"
    bad = [
        ([str(tmp_path / "missing.npz"), "--out", str(run)], "no such annotation file"),
        ([str(digits_annotation), "--out", str(run), "--backbone", "resnet_nope"], "not a timm model"),
        ([str(digits_annotation), "--out", str(run), "--set", "nope=1"], "unknown setting"),
        ([str(digits_annotation), "--out", str(run), "--epochs", "2", "--warmup", "2"], "after warm-up"),
        (["--resume", "--out", str(tmp_path / "nothing")], "no such run folder"),
        ([str(digits_annotation), "--out", str(run), "--eval", "cifar10:test"], "--download"),
        ([str(digits_annotation), "--out", str(run), "--image-size", "0"], "--image-size must be a whole number within [1, 4096]"),
        ([str(digits_annotation), "--out", str(run), "--set", "lr"], "expected KEY=VALUE"),
        (
            [str(digits_annotation), "--out", str(run), "--set", "mixup_bn_frozen=maybe"],
            "'maybe' is not true or false",
        ),
        ([str(digits_annotation), "--out", str(run), "--val", str(class_folder)], "--val "),
        ([str(digits_annotation), "--out", str(run), "--eval", str(class_folder)], "its 3 classes"),
        ([str(digits_annotation), "--out", str(class_folder)], "is not a run folder"),
    ]
    for args, fragment in bad:
        result = _train(runner, cli, *TINY, *args)
        assert result.exit_code != 0, args
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not run.exists(), args
    # Images moved since annotation: the error says how to point at them.
    import shutil

    from coreg_edge.annotate import annotate

    moved = tmp_path / "moved"
    shutil.copytree(class_folder, moved)
    ann = tmp_path / "moved.npz"
    annotate(str(moved), ann, annotator="synthetic", seed=0, quiet=True)
    shutil.rmtree(moved)
    result = _train(runner, cli, str(ann), "--out", str(run), *TINY)
    assert result.exit_code == 1 and "pass --data" in result.stderr and not run.exists(), result.stderr
    # --resume continues a run as stored: options that change what it computes are refused, not ignored.
    stored = tmp_path / "stored"
    stored.mkdir()
    rf.write_json(stored / rf.CONFIG, {"format_version": rf.RUN_FORMAT_VERSION})
    result = _train(runner, cli, str(digits_annotation), "--resume", "--out", str(stored), "--epochs", "5")
    assert result.exit_code == 1 and "drop ANNOTATION, --epochs" in result.stderr, result.stderr


TINY_8PX = ["--backbone", "test_resnet", "--image-size", "8", "--batch-size", "64", "-q"]


class _Payload:
    """Pickled, it would run code on load: the checkpoint loader must refuse it, not advise loading it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_checkpoint_is_refused_without_relaying_the_advice(
    runner, cli, digits_annotation, tmp_path
):
    import torch

    run = tmp_path / "run"
    args = ["train", str(digits_annotation), "--out", str(run), "--method", "proden", "--epochs", "2", *TINY_8PX]
    assert runner.invoke(cli, args).exit_code == 0
    (run / "selection.json").unlink()  # unfinished again, so that --resume loads the checkpoint
    marker = tmp_path / "payload-ran"
    torch.save({"peers": _Payload(marker)}, run / "checkpoint.pt")
    result = runner.invoke(cli, ["train", "--resume", "--out", str(run), "-q"])
    assert result.exit_code == 1 and not marker.exists()
    assert "not a checkpoint this program wrote" in last_line(result)
    assert "weights_only" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["train", "x.npz", "--out", "r", "--epochs", "x"],
        ["train", "x.npz", "--out", "r", "--cache", "bogus"],
        ["train", "x.npz"],
    ],
)
def test_usage_errors_are_one_line(runner, cli, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--help" in lines[0], lines


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "x.npz", "--out", "r", "--epochs", "99999999999999999999"], "--epochs must be a whole number"),
    ],
)  # fmt: skip
def test_huge_values_are_one_line_before_any_work(runner, cli, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(cli, args), 2, fragment)
