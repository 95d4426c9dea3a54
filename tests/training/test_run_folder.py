"""The run folder's readers: what they advise for a run without its final files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from coreg_edge.errors import UserError
from coreg_edge.training import run_folder as rf

HOLD = (
    "import sys, time\n"
    "from coreg_edge.locks import exclusive\n"
    "with exclusive(sys.argv[1], 'run folder'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(60)\n"
)


def _unfinished_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / rf.CONFIG).write_text(json.dumps({"format_version": rf.RUN_FORMAT_VERSION, "method": "coreg"}))
    return run


def _error(call) -> str:
    with pytest.raises(UserError) as info:
        call()
    return str(info.value)


def test_a_run_still_training_is_not_told_to_resume(tmp_path):
    """`export RUN` while RUN trains advised `--resume`, which would only meet the run's lock."""
    run = _unfinished_run(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        for call in (lambda: rf.read_selection(run), lambda: rf.load_network(run, "a")):
            message = _error(call)
            assert "it is still training, in use by coreg-edge" in message and f"(pid {holder.pid}, since " in message
            assert "wait for it to finish" in message and "--resume" not in message
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: its lock file stays behind, naming a dead pid
        holder.wait(timeout=30)
    message = _error(lambda: rf.read_selection(run))
    assert message.endswith(f"training has not finished (resume it: coreg-edge train --resume --out {run})"), message


def test_a_live_pid_in_a_stale_lock_file_is_not_a_training(tmp_path):
    """A lock file left by a killed run whose pid a new process took: not locked, so not training."""
    run = _unfinished_run(tmp_path)
    from coreg_edge.locks import lock_path

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        lock_path(run).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "command": "x"}))
        if not Path("/proc/locks").exists():
            pytest.skip("no /proc/locks: the pid alone decides")
        assert rf.training_now(run) is None
        assert "--resume" in _error(lambda: rf.read_selection(run))
    finally:
        other.kill()
        other.wait(timeout=30)


def test_metrics_never_hold_a_bare_nan(tmp_path):
    from coreg_edge.training.run_folder import write_json
    from coreg_edge.utils import json_safe

    assert json_safe({"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": "x"}) == {
        "a": [1.0, None],
        "b": {"c": None},
        "d": "x",
    }
    write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=lambda name: 1 / 0) == {"loss": None}


def test_info_on_a_run_still_training_reads_past_a_cut_last_line(tmp_path, runner, cli):
    """metrics.jsonl's last line is cut while an epoch is being written: `info RUN` shows the finished
    epochs and names the line it left out, as the report does (one reader: rf.metrics_rows)."""
    run = tmp_path / "run"
    run.mkdir()
    config = {"format_version": rf.RUN_FORMAT_VERSION, "method": "coreg", "class_names": ["a", "b"],
              "network": {"backbone": "test_resnet", "image_size": 8}, "settings": {"epochs": 5},
              "annotator": {"kind": "synthetic"}}  # fmt: skip
    (run / rf.CONFIG).write_text(json.dumps(config))
    (run / rf.METRICS).write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2, "lo')
    result = runner.invoke(cli, ["info", str(run), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs_done"] == 2 and not summary["finished"]
    assert summary["metrics_lines_skipped"] == [f"line 3 ({rf.CUT_SHORT})"]
    rows, skipped = rf.metrics_rows(run / rf.METRICS)
    assert [row["epoch"] for row in rows] == [0, 1] and skipped == [(3, rf.CUT_SHORT)]
    with pytest.raises(UserError, match="corrupt JSON on line 3"):
        rf.read_metrics(run)  # training's own reader stays strict
