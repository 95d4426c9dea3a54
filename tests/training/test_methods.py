"""Methods by registry: the built-in rows, and a new method trained by adding one row (no trainer edit)."""

from __future__ import annotations

import tempfile

import pytest
from torch.nn import functional as F

from coreg_edge.errors import UserError
from coreg_edge.training import methods
from coreg_edge.training import run_folder as rf

# A child runs outside the checkout: from its root, Python would import the source folder (where the
# exporters are not yet `coreg_edge.exporters`) instead of the installed package.
OUTSIDE = tempfile.gettempdir()
TINY = ["--backbone", "test_resnet", "--image-size", "8", "--batch-size", "64", "--epochs", "2", "-q"]


def test_the_builtin_rows():
    assert methods.method_names() == ("coreg", "proden", "cc", "ce-top1", "supervised")
    coreg = methods.get_method("coreg")
    assert coreg.peers == ("a", "b") and coreg.co_training and not coreg.needs_labels
    assert methods.get_method("supervised").needs_labels and methods.get_method("proden").init_peer
    import subprocess
    import sys

    code = "import sys\nfrom coreg_edge.training.methods import method_names\nmethod_names()\nprint('torch' in sys.modules)"
    listing = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=OUTSIDE
    )
    assert listing.stdout.strip() == "False"  # the CLI's --method choices import no torch
    assert all(methods.get_method(name).peers == ("a",) for name in methods.method_names()[1:])
    with pytest.raises(UserError, match="--method must be one of coreg, proden, cc, ce-top1, supervised"):
        methods.get_method("mixmatch")


def test_a_new_method_is_one_registration(runner, cli, digits_annotation, tmp_path, monkeypatch):
    seen = []

    def uniform_epoch(inputs: methods.EpochInputs) -> dict:
        """Cross-entropy to the uniform distribution over each item's candidates (a toy PLL loss)."""
        ctx, peer = inputs.ctx, inputs.peers[0]
        peer.net.train()
        for batch in ctx.batches(inputs.train_rows, ctx.batch_size):
            idx = batch.to(ctx.device)
            targets = ctx.candidates[idx].float()
            logits = peer.logits(ctx.views.weak(ctx.fetch(idx))).float()
            loss = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
            peer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            peer.optimizer.step()
        seen.append(inputs.epoch)
        return {"phase": "uniform", "loss": {"a": {"uniform": float(loss)}}}

    monkeypatch.setitem(methods._METHODS, "uniform", methods.Method("uniform", "toy", uniform_epoch, rank=9))
    run = tmp_path / "run"
    result = runner.invoke(
        cli, ["train", str(digits_annotation), "--out", str(run), "--method", "uniform", *TINY]
    )
    assert result.exit_code == 0, result.output
    assert seen == [0, 1] and [m["phase"] for m in rf.read_metrics(run)] == ["uniform", "uniform"]
    assert rf.peer_file(run, "a").exists() and not rf.peer_file(run, "b").exists()


def test_register_method_refuses_rows_the_trainer_cannot_run():
    def run(inputs):  # pragma: no cover - never called
        return {}

    with pytest.raises(ValueError, match="peers must be"):
        methods.register_method(methods.Method("three", "x", run, peers=("a", "c")))
    with pytest.raises(ValueError, match="co_training needs both peers"):
        methods.register_method(methods.Method("solo", "x", run, co_training=True))
    with pytest.raises(ValueError, match="registered already"):
        methods.register_method(methods.Method("coreg", "x", run))
    assert "three" not in methods.method_names() and "solo" not in methods.method_names()
