"""The device install: predict and bench run in a Python where torch & co. cannot be imported.

A `sitecustomize.py` on PYTHONPATH installs a meta-path finder that raises ImportError for torch, timm,
open_clip, onnx and torchvision before anything else runs; the CLI then runs as `python -m coreg_edge`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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


@pytest.fixture()
def device_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("COREG_EDGE_DEBUG", None)
    return env


def _run(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_blocker_is_active(device_env: dict[str, str]) -> None:
    for module in BLOCKED:
        probe = _run(device_env, "-c", f"import {module}")
        assert probe.returncode != 0 and "blocked" in probe.stderr, module
    probe = _run(device_env, "-c", "import onnxruntime, numpy, PIL, click, tqdm")
    assert probe.returncode == 0, probe.stderr


def test_predict_and_bench_without_torch(tiny, image_folder: Path, device_env: dict[str, str]) -> None:
    predict = _run(
        device_env, "-m", "coreg_edge", "predict", tiny.with_metadata, image_folder, "--format", "json"
    )
    assert predict.returncode == 0, predict.stderr
    lines = [json.loads(line) for line in predict.stdout.splitlines()]
    assert len(lines) == 8 and all(Path(x["path"]).stem.split("_")[1] == x["top"][0]["label"] for x in lines)
    bench = _run(
        device_env,
        "-m",
        "coreg_edge",
        "bench",
        tiny.with_metadata,
        "--vs",
        tiny.with_metadata,
        "--batch-sizes",
        "1",
        "--warmup",
        "0",
        "--iters",
        "2",
        "--json",
    )
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["ratios"][0]["batch_size"] == 1
    # The library itself, too (what parity checks and device apps import).
    code = (
        "import sys; from coreg_edge.runtime import Classifier; "
        f"print(Classifier({str(tiny.with_metadata)!r}).predict_one({str(next(image_folder.rglob('*.png')))!r}).label)"
    )
    library = _run(device_env, "-c", code)
    assert library.returncode == 0 and library.stdout.strip() in ("red", "green", "blue", "gray"), (
        library.stderr
    )
    assert _run(device_env, "-m", "coreg_edge", "predict", "--help").returncode == 0


def test_host_commands_on_a_device_install_name_the_extra(device_env: dict[str, str], tmp_path: Path) -> None:
    for args in (
        ["train", "ann.npz", "--out", tmp_path / "run"],
        ["annotate", "digits", "--out", tmp_path / "a.npz"],
    ):
        result = _run(device_env, "-m", "coreg_edge", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert "pip install 'coreg-edge[train]'" in lines[0]
