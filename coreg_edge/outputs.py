"""Folder outputs (labels, review): new or empty, never inside the images they come from, built in a staging
folder and renamed into place when complete; a staging folder a killed call left behind is removed by the
next call for the same folder. (Files: utils.atomic_path; export folders: exporters/staging.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from coreg_edge.errors import UserError
from coreg_edge.locks import INSIDE_NAME, process_alive
from coreg_edge.utils import read_json_object

#: A file inside each staging folder of new_folder(): whose it is (pid, host, target), for a later cleanup.
STAGING_MARK = ".coreg-edge-staging"


def _staging_name(target: Path, pid: int) -> str:
    return f".{target.name or 'root'}.{pid}.tmp"


def remove_stale_staging(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders new_folder() left for `target` (an absolute path) in a process that died
    (kill -9, power loss): beside it, or inside it when it was an existing empty folder. One is removed only
    when its name, its mark (this host, that pid, this target) and a gone process all agree; returns them."""
    target = Path(target)
    pattern = re.compile(r"\." + re.escape(target.name or "root") + r"\.(\d+)\.tmp")
    removed = []
    for folder in (target.parent, target):
        if not folder.is_dir():
            continue
        try:
            entries = list(folder.glob(".*.tmp"))
        except OSError:  # unreadable: nothing of ours can be found there
            continue
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir():
                continue
            pid, mark = int(match.group(1)), read_json_object(entry / STAGING_MARK)
            same_host = mark.get("host") == socket.gethostname()
            ours = mark.get("pid") == pid and same_host and mark.get("out") == str(target)
            if ours and pid != os.getpid() and not process_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)  # links inside are removed, never followed
                removed.append(entry)
    return removed


def check_new_folder(out: str | os.PathLike[str]) -> Path:
    """A folder output must be new or empty: an earlier output is never replaced (one line otherwise).
    Stale staging folders of a dead earlier call for the same folder are removed first (they are not
    output, and would otherwise make it look used forever). Returns `out` as given (user-relative)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(
            f"--out {out}: is a file; --out names a folder to write (new or empty), nothing was changed"
        )
    target = out.resolve()
    remove_stale_staging(target)
    # our own lock (inside when the parent is not writable) does not count
    if target.is_dir() and any(p.name != INSIDE_NAME for p in target.iterdir()):
        raise UserError(
            f"--out {out}: exists and is not empty; choose a new folder (nothing was overwritten)"
        )
    return out


def check_outside(
    out: str | os.PathLike[str], folder: str | os.PathLike[str] | None, what: str = "DATA"
) -> None:
    """Refuse a folder output inside `folder` (the images it is made from): reading that folder again would
    take the output's files for more items (an extra class, every item twice)."""
    if folder is None or not Path(folder).is_dir():
        return
    inner, outer = Path(out).expanduser().resolve(), Path(folder).resolve()
    if inner == outer or outer in inner.parents:
        raise UserError(
            f"--out {out}: is inside {what} {folder}, whose images it would then add to; choose a folder outside it"
        )


@contextlib.contextmanager
def new_folder(out: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success its contents become `out` (new or empty), on any failure
    it is removed and `out` stays as it was; an OSError becomes one line naming `what`.

    A new `out` is built beside it and renamed (atomic). An existing empty folder (`--out .` included) is
    kept and filled in place: staged inside it, then each entry renamed into it, so a shell inside it, a
    mount point and its permissions stay as they were. The path is resolved first: `.` has no name."""
    given = check_new_folder(out)
    target = given.resolve()
    fill = target.is_dir()
    staging = (target if fill else target.parent) / _staging_name(target, os.getpid())
    moved: list[Path] = []
    done = False
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        mark = {"pid": os.getpid(), "host": socket.gethostname(), "out": str(target)}
        (staging / STAGING_MARK).write_text(json.dumps(mark), encoding="utf-8")
        yield staging
        if fill:  # folders first, files (the manifests) last; the mark stays until the staging folder goes
            for entry in sorted(staging.iterdir(), key=lambda p: (p.is_file(), p.name)):
                if entry.name != STAGING_MARK:
                    os.rename(entry, target / entry.name)
                    moved.append(target / entry.name)
        else:
            (staging / STAGING_MARK).unlink()
            staging.rename(target)
        done = True
    except OSError as exc:
        reason = str(exc).replace(str(staging), str(given))  # name the user's folder, not the hidden one
        raise UserError(f"--out {given}: cannot write the {what} ({reason})") from exc
    finally:
        if not done:
            for path in moved:  # a half-filled folder is no output: back to empty (only what we put there)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
