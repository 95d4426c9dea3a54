"""A run folder with two confidently trained peers on digits, built once per session through run_folder.

`make_trained_run(path)` writes what the trainer writes (config.json, peer_a/peer_b.safetensors,
selection.json) with a plain supervised loop, so the export tests do not depend on the trainer; swap it
for the real trainer once that is stable.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

CLASS_NAMES = [str(i) for i in range(10)]
SIZE = 16
EPOCHS = 6


def _preprocess_config():
    from coreg_edge.runtime.preprocess import PreprocessConfig

    return PreprocessConfig(
        channels=3,
        input_size=(SIZE, SIZE),
        resize_rule="square",
        resize_size=SIZE,
        interpolation="bilinear",
        crop=(SIZE, SIZE),
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )


def _arrays(split: str, config) -> tuple[np.ndarray, np.ndarray]:
    from coreg_edge.data import open_source
    from coreg_edge.runtime.preprocess import preprocess

    source = open_source(split)
    images = np.stack([preprocess(source.load(i), config) for i in range(len(source))])
    return images, source.labels


def _train(seed: int, x, y, epochs: int = EPOCHS):
    import torch

    from coreg_edge.models import create_network

    torch.manual_seed(seed)
    net = create_network("test_resnet", 10, image_size=SIZE)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = (len(x) + 63) // 64
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.2, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval()


def make_trained_run(path: Path, peers: tuple[str, ...] = ("a", "b")) -> dict[str, float]:
    """Train the peers on digits (true labels), write the run folder at `path`; returns test accuracy."""
    import torch

    from coreg_edge.models import NetworkConfig
    from coreg_edge.training import run_folder

    config = _preprocess_config()
    x, y = (torch.from_numpy(a) for a in _arrays("digits", config))
    xt, yt = (torch.from_numpy(a) for a in _arrays("digits:test", config))
    accuracy: dict[str, float] = {}
    for seed, peer in enumerate(peers):
        net = _train(seed, x, y)
        with torch.no_grad():
            accuracy[peer] = float((net(xt).argmax(1) == yt).float().mean())
        run_folder.save_weights(net, run_folder.peer_file(path, peer))
    network = NetworkConfig(backbone="test_resnet", num_classes=10, in_chans=3, image_size=SIZE)
    run_folder.write_json(
        path / run_folder.CONFIG,
        {
            "format_version": run_folder.RUN_FORMAT_VERSION,
            "method": "supervised",
            "network": network.to_dict(),
            "preprocess": config.to_metadata(),
            "class_names": CLASS_NAMES,
            "annotation": None,
            "annotator": {"kind": "synthetic"},
            "data": {"source": "builtin", "root": "digits", "split": "train", "channels": 3},
            "eval_data": "digits:test",
            "settings": {},
            "seed": 0,
        },
    )
    run_folder.write_json(
        path / run_folder.SELECTION,
        {"selected": "a", "reason": "test fixture: peer a by construction", "test_accuracy": accuracy},
    )
    return accuracy


@contextlib.contextmanager
def one_torch_thread():
    """PyTorch with one thread, restored afterwards. The networks here are tiny, and on a shared 2-core
    machine a second OpenMP thread fighting another process's threads made a 16 px forward pass ~80x
    slower (1 s instead of 13 ms per batch of 32)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    pytest.importorskip("torch")
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder (peers a and b, >= 90% on digits:test). Copy it before changing it."""
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("trained_run")
    with one_torch_thread():  # session fixtures run before the autouse one
        accuracy = make_trained_run(path)
    assert min(accuracy.values()) >= 0.90, accuracy
    return path


@dataclass(frozen=True)
class Exported:
    run: Path
    out: Path
    result: Result


@pytest.fixture(scope="session")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """`coreg-edge export RUN --out DIR --int8` once: model.onnx, model.int8.onnx, parity.json. Read only."""
    from coreg_edge.cli import cli

    out = tmp_path_factory.mktemp("exported")
    with one_torch_thread():
        result = CliRunner().invoke(cli, ["export", str(trained_run), "--out", str(out), "--int8", "--quiet"])
    return Exported(trained_run, out, result)


@pytest.fixture(scope="session")
def exported_all(trained_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """`coreg-edge export RUN --out DIR --formats all --json` once: every format's file. Read only."""
    from coreg_edge.cli import cli

    out = tmp_path_factory.mktemp("exported_all")
    with one_torch_thread():
        result = CliRunner().invoke(cli, ["export", str(trained_run), "--out", str(out), "--formats", "all", "--json", "-q"])
    return out, result


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run, free to break."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))
