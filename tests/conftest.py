"""Shared fixtures: a tiny random open_clip model on disk, small image folders, a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# One compute thread for every test and the children they start (they inherit the environment): the tests'
# tensors are tiny, and two OpenMP threads on a 2-core machine where another process holds a core made tiny
# trainings 20-100x slower (measured). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The disk image cache of every test (and its children) in one throw-away folder, never the user's ~/.cache.
os.environ.setdefault("COREG_EDGE_CACHE", tempfile.mkdtemp(prefix="coreg-edge-test-cache-"))

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    """(config JSON, checkpoint): a randomly initialised open_clip model loaded the way a user loads one."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny_clip")
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip")
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


def write_images(folder: Path, count: int, size=(40, 30), seed: int = 0, mode: str = "RGB") -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(array).convert(mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """Three classes, four images each, in mixed modes (RGB, grayscale, palette, RGBA)."""
    root = tmp_path / "labelled"
    for label, (name, mode) in enumerate([("cat", "RGB"), ("dog", "L"), ("bird", "RGBA")]):
        write_images(root / name, 4, seed=label, mode=mode)
    write_images(root / "tmp", 1, seed=9, mode="P")[0].rename(root / "bird" / "palette.png")
    (root / "tmp").rmdir()
    return root


@pytest.fixture
def flat_folder(tmp_path) -> Path:
    root = tmp_path / "flat"
    write_images(root, 6)
    return root


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli():
    from coreg_edge.cli import cli as group

    return group


@pytest.fixture(scope="session")
def digits_annotation(tmp_path_factory) -> Path:
    """digits with synthetic candidate sets (q=0.3, eta=0.2), written once per test session. Read only."""
    from coreg_edge.annotate import annotate

    path = tmp_path_factory.mktemp("ann") / "digits.npz"
    annotate("digits", path, annotator="synthetic", partial_rate=0.3, noise_rate=0.2, seed=0, quiet=True)
    return path


# -- the device install: a Python where torch & co. cannot be imported ------------------------------------

BLOCKED = ("torch", "timm", "open_clip", "onnx", "torchvision")
SITECUSTOMIZE = f"""
import sys

class _BlockHostPackages:
    blocked = {BLOCKED!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"{{name}} is blocked: this test simulates a device install", name=name)
        return None

sys.meta_path.insert(0, _BlockHostPackages())
"""


@pytest.fixture
def blocked_modules() -> tuple[str, ...]:
    return BLOCKED


@pytest.fixture
def device_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import torch, timm, open_clip, onnx or torchvision (a
    `sitecustomize.py` meta-path finder on PYTHONPATH), as on a device install."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    # the installed package, as a device has it (not the checkout, whose layout differs: exporters/ installs
    # as coreg_edge.exporters), with the blocker first
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("COREG_EDGE_DEBUG", None)
    return env


@pytest.fixture
def device_run():
    """run(env, *args): `python *args` in that environment, outside the checkout."""

    def run(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
        # not from the checkout: `python -m` puts the working folder first on sys.path
        return subprocess.run(
            [sys.executable, *map(str, args)], env=env, capture_output=True, text=True, timeout=120,
            cwd=tempfile.gettempdir(),
        )  # fmt: skip

    return run


@pytest.fixture
def impossible_limits(monkeypatch):
    """impossible_limits("int8", min_cosine=1.01): export's parity then uses those limits for that check set."""
    import coreg_edge.exporters.export as pipeline

    real = pipeline.Thresholds

    def apply(checks: str, **limits: float) -> None:
        monkeypatch.setattr(pipeline, "Thresholds", lambda **kw: real(**kw).with_limits(checks, **limits))

    return apply
