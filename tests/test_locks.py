"""Exclusive output locks: two processes into one folder, exactly one proceeds; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coreg_edge.locks import LockedError, exclusive, lock_path


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_a_second_holder_gets_one_line_naming_the_first(tmp_path):
    target = tmp_path / "run"
    with exclusive(target, "run folder") as path:
        assert path == lock_path(target) and path.parent == tmp_path and path.name == ".run.lock"
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from coreg_edge.locks import exclusive\nwith exclusive({str(target)!r}, 'run folder'): pass",
            ],
            capture_output=True,
            text=True,
        )
        assert child.returncode != 0 and "LockedError" in child.stderr
        assert f"pid {os.getpid()}" in child.stderr and "in use by" in child.stderr
    assert not lock_path(target).exists()  # released


def test_a_stale_lock_is_taken_over(tmp_path):
    target = tmp_path / "ann.npz"
    record = {
        "pid": _dead_pid(),
        "host": socket.gethostname(),
        "command": "coreg-edge annotate",
        "since": 1.0,
    }
    lock_path(target).write_text(json.dumps(record))
    with exclusive(target):
        assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    assert not lock_path(target).exists()


def test_a_live_lock_from_another_host_is_respected(tmp_path):
    target = tmp_path / "dist"
    record = {"pid": 1, "host": "elsewhere", "command": "coreg-edge export", "since": time.time()}
    lock_path(target).write_text(json.dumps(record))
    with pytest.raises(LockedError, match=r"in use by coreg-edge export \(pid 1 on elsewhere"):
        with exclusive(target, "export folder"):
            pass
    assert lock_path(target).exists()  # not ours: left alone


@pytest.mark.slow
def test_two_trainings_into_one_folder_exactly_one_proceeds(tmp_path):
    env = {**os.environ, "COREG_EDGE_NO_PROGRESS": "1"}
    cli = [sys.executable, "-m", "coreg_edge"]
    ann = tmp_path / "ann.npz"
    subprocess.run(
        [*cli, "annotate", "digits", "--annotator", "synthetic", "--out", str(ann), "--quiet"],
        check=True,
        env=env,
    )
    out = tmp_path / "run"
    args = ["train", str(ann), "--out", str(out), "--method", "proden", "--backbone", "test_resnet"]
    args += ["--image-size", "8", "--epochs", "3", "--quiet"]
    procs = [subprocess.Popen([*cli, *args], stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    error = next(text for code, text in results if code == 1)
    lines = [line for line in error.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in error
    assert "in use by coreg-edge train" in lines[0] or "already holds a run" in lines[0]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]  # one run's epochs, nothing interleaved
    assert not lock_path(out).exists()


def test_a_folder_lock_lives_beside_the_folder_not_inside(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    with exclusive(target):
        assert list(target.iterdir()) == []
    assert Path(lock_path(target)).parent == tmp_path


def test_an_unwritable_output_fails_before_any_work(runner, cli, tmp_path, monkeypatch):
    import coreg_edge.locks as locks
    from coreg_edge.annotate import annotate

    ann = tmp_path / "ann.npz"
    annotate("digits", ann, annotator="synthetic", quiet=True)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(locks.tempfile, "mkstemp", refuse)  # as root, permissions cannot be taken away
    out = tmp_path / "run"
    began = time.perf_counter()
    result = runner.invoke(cli, ["train", str(ann), "--out", str(out), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == f"Error: {out}: not writable (Permission denied)"
    assert time.perf_counter() - began < 30 and not (out / "config.json").exists()
    assert not lock_path(out).exists()


def test_a_read_only_place_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    from coreg_edge.errors import UserError

    with pytest.raises(UserError, match="not writable"):
        with exclusive(blocker / "run"):
            pass
