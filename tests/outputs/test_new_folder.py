"""outputs.new_folder / check_new_folder: folder outputs (labels, review) are new or empty, built under a
hidden staging name, and nothing of a killed call stays behind (#26 items 4, 17a, 18)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from coreg_edge.errors import UserError
from coreg_edge.outputs import STAGING_MARK, check_new_folder, new_folder

KILLED = """
import os, sys
from coreg_edge.outputs import new_folder
with new_folder(sys.argv[1], "labels folder") as staging:
    (staging / "cat").mkdir()
    (staging / "cat" / "copy.png").write_bytes(b"x" * 1000)
    os.kill(os.getpid(), 9)
"""


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_out_dot_fills_the_empty_current_folder_in_place(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    with new_folder(".", "labels folder") as staging:  # was: ValueError "PosixPath('.') has an empty name"
        (staging / "labels.csv").write_text("item\n")
        (staging / "cat").mkdir()
    assert sorted(p.name for p in here.iterdir()) == ["cat", "labels.csv"]
    assert here.stat().st_ino == inode  # the same folder: a shell inside it sees the files
    assert not _hidden(tmp_path) and not _hidden(here)


def test_a_failure_leaves_an_existing_empty_folder_empty(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with (
        pytest.raises(UserError, match="cannot write the labels folder"),
        new_folder(out, "labels folder") as staging,
    ):
        (staging / "cat").mkdir()
        raise OSError(28, "No space left on device", str(staging / "cat"))
    assert list(out.iterdir()) == [] and not _hidden(tmp_path)


def test_an_oserror_names_the_users_folder_not_the_staging_one(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError) as caught, new_folder(out, "labels folder") as staging:
        raise FileExistsError(17, "File exists", str(staging / "cat" / "a.png"))
    assert ".tmp" not in str(caught.value) and str(out / "cat" / "a.png") in str(caught.value)


def test_out_naming_a_file_is_told_it_is_a_file(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    with pytest.raises(UserError, match="is a file") as caught:
        check_new_folder(out)
    assert "not empty" not in str(caught.value) and out.read_text() == "keep me"


@pytest.mark.parametrize("existing", [False, True], ids=["new-out", "empty-out"])
def test_a_killed_call_leaves_no_staging_folder_behind(tmp_path, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    killed = subprocess.run([sys.executable, "-c", KILLED, str(out)], capture_output=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    stale = [
        p
        for folder in (tmp_path, out)
        if folder.is_dir()
        for p in folder.iterdir()
        if p.name.endswith(".tmp")
    ]
    assert len(stale) == 1 and (stale[0] / STAGING_MARK).exists()  # what kill -9 leaves: a dead pid's folder
    with new_folder(out, "labels folder") as staging:  # a later call for the same OUT removes it first
        (staging / "labels.csv").write_text("item\n")
    assert not stale[0].exists() and [p.name for p in out.iterdir()] == ["labels.csv"]
    assert not _hidden(tmp_path)


def test_a_staging_folder_of_a_live_process_or_another_out_is_kept(tmp_path):
    out, other = tmp_path / "out", tmp_path / "other"
    mine = tmp_path / f".out.{os.getppid()}.tmp"  # a live process (this one's parent): maybe still writing
    unmarked = tmp_path / ".out.999999999.tmp"  # a dead pid, but no mark: not known to be ours
    for folder in (mine, unmarked):
        folder.mkdir()
    (mine / STAGING_MARK).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "out": str(out)})
    )
    with new_folder(other, "labels folder"):
        pass
    with new_folder(out, "labels folder"):
        pass
    assert mine.exists() and unmarked.exists()
