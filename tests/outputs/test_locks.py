"""Exclusive output locks: two processes into one folder, exactly one proceeds; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coreg_edge.locks import LockedError, exclusive, lock_path

# Children run outside the checkout: `python -m coreg_edge` from its root would import the source
# folder (where the exporters are not yet `coreg_edge.exporters`) instead of the installed package.
OUTSIDE = tempfile.gettempdir()


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, cwd=OUTSIDE
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
            cwd=OUTSIDE,
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


def test_a_killed_owner_leaves_no_lock(tmp_path):
    """kill -9 runs no cleanup; the kernel still drops the lock, and the next caller proceeds."""
    target = tmp_path / "run"
    code = (
        "import os, sys\nfrom coreg_edge.locks import exclusive\n"
        f"with exclusive({str(target)!r}):\n    print('held', flush=True)\n    os.kill(os.getpid(), 9)\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=OUTSIDE)
    assert child.returncode == -9 and "held" in child.stdout
    assert lock_path(target).exists()  # the file is left behind ...
    with exclusive(target):  # ... but it is no lock
        pass


def test_the_same_output_twice_in_one_process_is_refused(tmp_path):
    target = tmp_path / "dist"
    with exclusive(target, "export folder"):
        with pytest.raises(LockedError, match=f"in use by .*pid {os.getpid()}"):
            with exclusive(target, "export folder"):
                pass


@pytest.mark.slow
def test_two_trainings_into_one_folder_exactly_one_proceeds(tmp_path):
    env = {**os.environ, "COREG_EDGE_NO_PROGRESS": "1"}
    cli = [sys.executable, "-m", "coreg_edge"]
    ann = tmp_path / "ann.npz"
    subprocess.run(
        [*cli, "annotate", "digits", "--annotator", "synthetic", "--out", str(ann), "--quiet"],
        check=True,
        env=env,
        cwd=OUTSIDE,
    )
    out = tmp_path / "run"
    args = ["train", str(ann), "--out", str(out), "--method", "proden", "--backbone", "test_resnet"]
    args += ["--image-size", "8", "--epochs", "12", "--quiet"]  # long enough to be caught holding the lock
    first = subprocess.Popen([*cli, *args], stderr=subprocess.PIPE, text=True, env=env, cwd=OUTSIDE)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:  # until the first holds the folder
        if lock_path(out).exists() and f'"pid": {first.pid}' in lock_path(out).read_text():
            break
        time.sleep(0.05)
    second = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, timeout=300, cwd=OUTSIDE)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert second.returncode == 1
    lines = [line for line in second.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert lines[0].startswith(
        f"Error: {out}: this run folder is in use by coreg-edge train (pid {first.pid}"
    )
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(12))  # one run's epochs, nothing interleaved
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
    result = runner.invoke(cli, ["train", str(ann), "--out", str(out), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == f"Error: {out}: not writable (Permission denied)"
    assert not (out / "config.json").exists()
    assert not lock_path(out).exists()


def test_a_read_only_place_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    from coreg_edge.errors import UserError

    with pytest.raises(UserError, match="not writable"):
        with exclusive(blocker / "run"):
            pass
