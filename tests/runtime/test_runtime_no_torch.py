"""The device install: predict and bench run in a Python where torch & co. cannot be imported.

A `sitecustomize.py` on PYTHONPATH installs a meta-path finder that raises ImportError for torch, timm,
open_clip, onnx and torchvision before anything else runs; the CLI then runs as `python -m coreg_edge`.
"""

from __future__ import annotations

import json
from pathlib import Path


def test_blocker_is_active(device_env: dict[str, str], device_run, blocked_modules) -> None:
    for module in blocked_modules:
        probe = device_run(device_env, "-c", f"import {module}")
        assert probe.returncode != 0 and "blocked" in probe.stderr, module
    probe = device_run(device_env, "-c", "import onnxruntime, numpy, PIL, click, tqdm")
    assert probe.returncode == 0, probe.stderr


def test_predict_and_bench_without_torch(tiny, image_folder: Path, device_env: dict[str, str], device_run) -> None:
    predict = device_run(
        device_env, "-m", "coreg_edge", "predict", tiny.with_metadata, image_folder, "--format", "json"
    )
    assert predict.returncode == 0, predict.stderr
    lines = [json.loads(line) for line in predict.stdout.splitlines()]
    assert len(lines) == 8 and all(Path(x["path"]).stem.split("_")[1] == x["top"][0]["label"] for x in lines)
    bench = device_run(
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
    library = device_run(device_env, "-c", code)
    assert library.returncode == 0 and library.stdout.strip() in ("red", "green", "blue", "gray"), (
        library.stderr
    )
    assert device_run(device_env, "-m", "coreg_edge", "predict", "--help").returncode == 0


def test_host_commands_on_a_device_install_name_the_extra(device_env: dict[str, str], device_run, tmp_path: Path) -> None:
    for args in (
        ["train", "ann.npz", "--out", tmp_path / "run"],
        ["annotate", "digits", "--out", tmp_path / "a.npz"],
    ):
        result = device_run(device_env, "-m", "coreg_edge", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert "pip install 'coreg-edge[train]'" in lines[0]
