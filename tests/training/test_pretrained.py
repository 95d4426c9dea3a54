"""`train --pretrained-backbone timm|FILE`: weights into both peers' backbones, new heads, the weights'
preprocessing, the backbone's lower learning rate, and one-line errors. Checkpoints are timm models with
random weights saved here (no network)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from coreg_edge.backbones import PRETRAINED_LR_SCALE, architecture_cfg, load_into
from coreg_edge.models import NetworkConfig, create_network, timm_body
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training.coreg import set_lr

# Children run outside the checkout (see tests/outputs/test_locks.py).
OUTSIDE = tempfile.gettempdir()
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# test_byobnet: ImageNet statistics, bicubic, crop_pct 0.95, 160 px (unlike digits: 0.5, bilinear, 8 px);
# test_resnet: the smallest ResNet (deep stem conv1.0, head fc).
CFG_MODEL = "test_byobnet"


# Tiny models: one thread is as fast, and does not stall 20-100x when another process holds a core.
CHILD_ENV = {
    **os.environ,
    "COREG_EDGE_NO_PROGRESS": "1",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class NotATensor:
    """A pickled Python object: weights_only=True must refuse it."""


def _save(model: torch.nn.Module, folder: Path, stem: str) -> dict[str, Path]:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"{stem}.safetensors"))
    torch.save(state, folder / f"{stem}.pth")
    return {"safetensors": folder / f"{stem}.safetensors", "pth": folder / f"{stem}.pth"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Full timm models (1000-class heads) with random weights, as .safetensors and .pth."""
    import timm

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(123)
    out = {name: _save(timm.create_model(name), folder, name) for name in ("test_resnet", CFG_MODEL)}
    out["test_resnet_other"] = _save(timm.create_model("test_resnet"), folder, "test_resnet_other")
    return out


@pytest.fixture(scope="module")
def ann(tmp_path_factory) -> Path:
    """digits:test (a few hundred items) with synthetic candidate sets."""
    from coreg_edge.annotate import annotate

    path = tmp_path_factory.mktemp("ann") / "digits_test.npz"
    annotate("digits:test", path, annotator="synthetic", partial_rate=0.3, seed=0, quiet=True)
    return path


def _settings(**kw) -> TrainSettings:
    kw.setdefault("backbone", "test_resnet")
    return TrainSettings(coreg={"lr": 0.05}, **kw)


def _peers(settings: TrainSettings, size: int = 16):
    from coreg_edge.training.trainer import _build_peer

    config = NetworkConfig(backbone=settings.backbone, num_classes=10, image_size=size,
                           small_stem=False if settings.pretrained_backbone else None)  # fmt: skip
    return [
        _build_peer(name, config, settings, torch.device("cpu"), 64, 10, i, False)
        for i, name in enumerate("ab")
    ]


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_weights_land_in_both_peers_backbones_and_the_heads_are_new(weights, kind):
    path = weights["test_resnet"][kind]
    saved = load_file(str(weights["test_resnet"]["safetensors"]))
    peers = _peers(_settings(pretrained_backbone=str(path)))
    for peer in peers:
        for net in (peer.net, peer.key_net):  # the momentum encoder starts as a copy
            body = net.backbone.state_dict()
            assert not any(key.startswith("fc.") for key in body)
            for key, value in saved.items():
                if not key.startswith("fc."):
                    assert torch.equal(body[key], value), key
    a, b = (peer.net for peer in peers)
    assert a.classifier.weight.shape[0] == 10  # the classes' own head, not the checkpoint's 1000
    assert not torch.equal(a.classifier.weight, b.classifier.weight)  # heads differ by seed
    assert not torch.equal(a.projector[0].weight, b.projector[0].weight)
    scratch = _peers(_settings())[0].net.backbone.state_dict()
    assert not torch.equal(scratch["conv1.0.weight"], saved["conv1.0.weight"])  # the load did it


def test_a_head_of_another_class_count_is_dropped_and_reported(weights, tmp_path):
    import timm

    torch.manual_seed(5)
    five = timm.create_model("test_resnet", num_classes=5)
    path = tmp_path / "five.pth"
    # a timm training checkpoint wrapping it (with its argparse args, which timm's loader allows too)
    torch.save({"state_dict": five.state_dict(), "epoch": 7, "args": argparse.Namespace(lr=0.1)}, path)
    body = timm_body("test_resnet")
    loaded = load_into(body, str(path), "test_resnet", 3)
    assert sorted(loaded.dropped) == ["fc.bias", "fc.weight"]
    line = loaded.describe(10)
    assert "dropped its head (fc." in line and "the 10 classes get a new one" in line
    assert "(state_dict)" in loaded.source
    assert torch.equal(body.state_dict()["layer1.0.conv1.weight"], five.state_dict()["layer1.0.conv1.weight"])


def test_a_coreg_edge_peer_file_gives_its_backbone(tmp_path):
    net = create_network("test_resnet", 3, image_size=16, small_stem=False)
    path = tmp_path / "peer_a.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    body = timm_body("test_resnet")
    loaded = load_into(body, str(path), "test_resnet", 3)
    assert "classifier.weight" in loaded.dropped and "projector.0.weight" in loaded.dropped
    assert torch.equal(body.state_dict()["conv1.0.weight"], net.backbone.state_dict()["conv1.0.weight"])


def test_a_first_convolution_is_adapted_to_one_channel(weights):
    body = timm_body("test_resnet", in_chans=1)
    loaded = load_into(body, str(weights["test_resnet"]["pth"]), "test_resnet", 1)
    saved = torch.load(weights["test_resnet"]["pth"], weights_only=True)["conv1.0.weight"]
    assert loaded.adapted and body.state_dict()["conv1.0.weight"].shape[1] == 1
    assert torch.allclose(body.state_dict()["conv1.0.weight"], saved.sum(dim=1, keepdim=True))


def test_param_groups_give_the_backbone_a_tenth_of_the_heads_lr(weights):
    peer = _peers(_settings(pretrained_backbone=str(weights["test_resnet"]["pth"])))[0]
    groups = {g["name"]: g for g in peer.optimizer.param_groups}
    assert set(groups) == {"backbone", "heads"}
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in peer.net.backbone.parameters()}
    assert len(groups["backbone"]["params"]) + len(groups["heads"]["params"]) == len(
        list(peer.net.parameters())
    )
    set_lr(peer, 0.04)
    assert groups["heads"]["lr"] == pytest.approx(0.04)
    assert groups["backbone"]["lr"] == pytest.approx(0.04 * PRETRAINED_LR_SCALE) == pytest.approx(0.004)
    half = _peers(_settings(pretrained_backbone=str(weights["test_resnet"]["pth"]), backbone_lr_scale=0.5))[0]
    set_lr(half, 0.04)
    assert sorted(g["lr"] for g in half.optimizer.param_groups) == pytest.approx([0.02, 0.04])
    scratch = _peers(_settings())[0]  # from scratch: one group, every parameter at the schedule's lr
    set_lr(scratch, 0.04)
    assert [g["lr"] for g in scratch.optimizer.param_groups] == [pytest.approx(0.04)]


def test_preprocessing_follows_the_pretrained_cfg_unless_the_size_is_given():
    from coreg_edge.data import open_source
    from coreg_edge.training.data import preprocess_for

    source = open_source("digits:test")
    cfg = architecture_cfg(timm_body(CFG_MODEL), CFG_MODEL)
    scratch = preprocess_for(source, None, None)
    assert scratch.input_size == (8, 8) and scratch.mean == (0.5,) * 3 and scratch.interpolation == "bilinear"
    pre = preprocess_for(source, None, None, cfg)
    assert pre.input_size == (160, 160) and pre.resize_size == 168  # floor(160 / crop_pct 0.95)
    assert (
        list(pre.mean) == IMAGENET_MEAN and list(pre.std) == IMAGENET_STD and pre.interpolation == "bicubic"
    )
    sized = preprocess_for(source, 32, None, cfg)  # --image-size wins for the size
    assert sized.input_size == (32, 32) and sized.resize_size == 33 and list(sized.mean) == IMAGENET_MEAN
    grey = preprocess_for(source, 32, 1, cfg)
    assert grey.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,)) and grey.channels == 1


def test_config_json_stores_the_preprocessing_and_the_absolute_file(weights, ann, tmp_path, monkeypatch):
    from coreg_edge.training import run_folder as rf
    from coreg_edge.training import trainer

    monkeypatch.setattr(trainer, "_fit", lambda *a, **k: None)  # only what train() writes before the epochs
    monkeypatch.setattr(trainer, "_finish", lambda *a, **k: {})
    monkeypatch.chdir(weights[CFG_MODEL]["pth"].parent)
    out = tmp_path / "run"
    trainer.train(ann, out, backbone=CFG_MODEL, pretrained_backbone=f"{CFG_MODEL}.pth", epochs=2, warmup=1,
                  quiet=True, coreg={"lr": 0.05})  # fmt: skip
    config = rf.read_config(out)
    pre = config["preprocess"]
    assert pre["input_size"] == [160, 160] and pre["mean"] == IMAGENET_MEAN and pre["std"] == IMAGENET_STD
    assert pre["resize"]["interpolation"] == "bicubic" and config["network"]["image_size"] == 160
    assert config["settings"]["pretrained_backbone"] == str(weights[CFG_MODEL]["pth"].resolve())
    assert config["network"]["small_stem"] is False


def test_resume_refuses_a_pretrained_file_whose_content_changed(runner, cli, weights, ann, tmp_path, monkeypatch):
    """config.json named the starting weights by path only: other weights put behind the same name passed
    as the run's. It records their content now, and resume refuses a file that changed (one line)."""
    from coreg_edge.digests import content_id
    from coreg_edge.training import run_folder as rf
    from coreg_edge.training import trainer

    monkeypatch.setattr(trainer, "_fit", lambda *a, **k: None)  # only what train() writes before the epochs
    monkeypatch.setattr(trainer, "_finish", lambda *a, **k: {})
    start = tmp_path / "start.pth"
    start.write_bytes(weights["test_resnet"]["pth"].read_bytes())
    out = tmp_path / "run"
    trainer.train(ann, out, backbone="test_resnet", pretrained_backbone=str(start), image_size=16, epochs=2,
                  warmup=1, quiet=True, coreg={"lr": 0.05})  # fmt: skip
    recorded = rf.read_config(out)["pretrained_backbone_sha256"]
    assert recorded == content_id(start) and recorded.startswith("sha256:")
    start.write_bytes(weights["test_resnet_other"]["pth"].read_bytes())  # other weights, the same name
    result = runner.invoke(cli, ["train", "--resume", "--out", str(out), "-q"])
    line = _one_error_line(result)
    assert f"--pretrained-backbone {start} is not the file this run started from (its content changed" in line
    assert "restore that file to resume" in line and result.exit_code == 1


def test_a_recipe_takes_the_pretrained_keys(tmp_path):
    from coreg_edge.pipeline.calls import train_call
    from coreg_edge.recipe import RecipeError, load_recipe

    text = '[data]\ntrain = "digits"\n[train]\nbackbone = "test_resnet"\npretrained_backbone = "w.pth"\n'
    path = tmp_path / "r.toml"
    path.write_text(text + "backbone_lr_scale = 0.2\n")
    call = train_call(load_recipe(path))
    assert call["pretrained_backbone"] == "w.pth" and call["backbone_lr_scale"] == 0.2
    assert TrainSettings(**call).backbone_lr_scale == 0.2
    path.write_text(text + 'backbone_lr_scale = "low"\n')
    with pytest.raises(RecipeError, match="backbone_lr_scale"):
        load_recipe(path)


def test_resume_keeps_the_checkpoint_not_the_pretrained_weights(
    runner, cli, ann, weights, tmp_path, monkeypatch, one_thread
):
    pth = tmp_path / "start.pth"
    pth.write_bytes(weights["test_resnet"]["pth"].read_bytes())
    args = [str(ann), "--backbone", "test_resnet", "--pretrained-backbone", str(pth), "--image-size", "16",
            "--epochs", "3", "--warmup", "1", "--batch-size", "32", "--set", "lr=0.05", "--set", "queue_size=128",
            "-q"]  # fmt: skip
    straight = tmp_path / "straight"
    assert runner.invoke(cli, ["train", *args, "--out", str(straight)]).exit_code == 0

    import coreg_edge.training.coreg_method as method

    original, calls = method.coreg_epoch, {"n": 0}

    def interrupt_in_epoch_2(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch index 2, peer a: epochs 0 and 1 are checkpointed
            raise KeyboardInterrupt
        return original(*a, **kw)

    monkeypatch.setattr(method, "coreg_epoch", interrupt_in_epoch_2)
    resumed = tmp_path / "resumed"
    assert runner.invoke(cli, ["train", *args, "--out", str(resumed)]).exit_code == 130
    monkeypatch.setattr(method, "coreg_epoch", original)
    # Other weights of the same architecture under the same name: loading them over the checkpoint would
    # change the result; resuming must continue from the checkpoint alone.
    pth.write_bytes(weights["test_resnet_other"]["pth"].read_bytes())
    # ... and the weights need not exist any more: a resumed run loads no pretrained weights at all
    pth.rename(pth.with_suffix(".moved"))
    result = runner.invoke(cli, ["train", "--resume", "--out", str(resumed), "-q"])
    assert result.exit_code == 0, result.output
    from coreg_edge.training import run_folder as rf

    for peer in ("a", "b"):
        w1, w2 = load_file(str(rf.peer_file(straight, peer))), load_file(str(rf.peer_file(resumed, peer)))
        for key in w1:
            assert torch.equal(w1[key], w2[key]), key


def test_the_wrong_architecture_is_one_line_naming_keys(runner, cli, ann, weights, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(ann), "--backbone", CFG_MODEL, "--out", str(run)]
    line = _one_error_line(
        runner.invoke(cli, [*args, "--pretrained-backbone", str(weights["test_resnet"]["pth"])])
    )
    assert f"these weights do not fit --backbone {CFG_MODEL}" in line
    assert "missing keys, e.g. stem." in line and "unexpected keys, e.g. conv1.0.weight" in line
    assert not (run / "config.json").exists()  # it failed before the run started


@pytest.mark.parametrize("case", ["missing", "folder", "not_a_checkpoint", "pickled_object"])
def test_a_bad_file_is_one_line(runner, cli, ann, tmp_path, case):
    path = tmp_path / "weights.pth"
    if case == "folder":
        path.mkdir()
    elif case == "not_a_checkpoint":
        path.write_text("not weights")
    elif case == "pickled_object":
        torch.save({"fc.weight": torch.zeros(2), "optimizer": NotATensor()}, path)
    result = runner.invoke(cli, ["train", str(ann), "--backbone", "test_resnet", "--out", str(tmp_path / "run"),
                                 "--pretrained-backbone", str(path)])  # fmt: skip
    line = _one_error_line(result)
    assert line.startswith("Error: --pretrained-backbone ")
    expected = {"missing": "no such checkpoint file", "folder": "is a folder", "not_a_checkpoint": "not a checkpoint",
                "pickled_object": "Python objects other than tensors"}[case]  # fmt: skip
    assert expected in line


def test_small_stem_with_pretrained_weights_is_refused(runner, cli, ann, weights, tmp_path):
    result = runner.invoke(cli, ["train", str(ann), "--backbone", "test_resnet", "--small-stem", "--out",
                                 str(tmp_path / "run"), "--pretrained-backbone", str(weights["test_resnet"]["pth"])])  # fmt: skip
    line = _one_error_line(result)
    assert "--small-stem" in line and "random" in line


def test_timm_without_pretrained_weights_is_one_line(runner, cli, ann, tmp_path):
    result = runner.invoke(cli, ["train", str(ann), "--backbone", "test_mambaout", "--pretrained-backbone", "timm",
                                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert "timm has no pretrained weights for test_mambaout" in _one_error_line(result)


def test_timm_offline_with_an_empty_cache_is_one_line_without_a_download_attempt(ann, tmp_path):
    """No timing here (shared machines are noisy): the offline route is proven by its own answer, and the
    timeout only guards against a hang in retries."""
    home = tmp_path / "hf_home"
    home.mkdir()
    env = {k: v for k, v in CHILD_ENV.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home))
    child = subprocess.run(
        [sys.executable, "-m", "coreg_edge", "train", str(ann), "--backbone", "test_resnet",
         "--pretrained-backbone", "timm", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, cwd=OUTSIDE, timeout=120,
    )  # fmt: skip
    lines = [line for line in child.stderr.strip().splitlines() if line]
    assert child.returncode == 1 and len(lines) == 1, child.stderr
    assert "no network" in lines[0] and "timm/test_resnet" in lines[0] and str(home) in lines[0]
    assert "pre-download" in lines[0] and "checkpoint FILE" in lines[0]


def test_end_to_end_train_then_export_carries_the_pretrained_statistics(ann, weights, tmp_path):
    env = CHILD_ENV
    cli = [sys.executable, "-m", "coreg_edge"]
    run, exp = tmp_path / "run", tmp_path / "exp"

    def call(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*cli, *args], capture_output=True, text=True, env=env, cwd=OUTSIDE, timeout=600
        )
        assert done.returncode == 0, done.stderr
        return done

    trained = call("train", str(ann), "--backbone", CFG_MODEL, "--pretrained-backbone",
                   str(weights[CFG_MODEL]["safetensors"]), "--image-size", "32", "--epochs", "3", "--warmup", "1",
                   "--out", str(run))  # fmt: skip
    assert "pretrained backbone:" in trained.stderr and "dropped its head (head.fc." in trained.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["preprocess"]["mean"] == IMAGENET_MEAN and config["preprocess"]["input_size"] == [32, 32]
    info = json.loads(call("info", str(run), "--json").stdout)
    assert info["pretrained_backbone"] == str(weights[CFG_MODEL]["safetensors"])
    call("export", str(run), "--out", str(exp), "--parity-images", "64", "-q")
    meta = json.loads(call("info", str(exp / "model.onnx"), "--json").stdout)
    assert meta["mean"] == IMAGENET_MEAN and meta["std"] == IMAGENET_STD
    assert meta["input_size"] == [32, 32] and meta["resize"]["interpolation"] == "bicubic"


def test_timm_offline_loads_from_a_filled_cache(ann, weights, tmp_path):
    """The documented fix: weights pre-downloaded into the Hugging Face cache load offline (a cache laid
    out as huggingface_hub writes it: refs/main -> snapshots/<commit>/model.safetensors)."""
    home = tmp_path / "hf_home"
    repo = home / "hub" / "models--timm--test_resnet.r160_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model.safetensors").write_bytes(
        weights["test_resnet"]["safetensors"].read_bytes()
    )
    env = {k: v for k, v in CHILD_ENV.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home))
    child = subprocess.run(
        [sys.executable, "-m", "coreg_edge", "train", str(ann), "--backbone", "test_resnet",
         "--pretrained-backbone", "timm", "--image-size", "16", "--epochs", "2", "--warmup", "1",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, cwd=OUTSIDE, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert "from timm (timm/test_resnet.r160_in1k); dropped its head (fc." in child.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["settings"]["pretrained_backbone"] == "timm" and config["network"]["small_stem"] is False
