"""Outputs are built in a hidden staging folder inside DIR and published file by file after parity.

Each model that passed its checks is renamed into place (the same filesystem, so a reader never sees half a
file); one that failed is kept as `NAME.rejected` for inspection, and whatever good file an earlier export
left under NAME stays where it is: a deployable file never disappears because a later attempt failed.
parity.json is written last and describes every model under a final name: `files[NAME].published` says
whether this export wrote it, `kept` that an earlier export's file was left in place. A complete export
(every file passed) leaves DIR holding exactly its own files: a model it was not asked for (fp32 only after
an int8 export) is removed with its `.rejected` copy. A staging folder
left behind by a killed export (`.export-*`) is removed by the next export, which holds the folder's lock.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.formats import FILE_NAMES, REJECTED_SUFFIX, SIDE_FILES, get_format
from coreg_edge.locks import is_lock_file
from coreg_edge.utils import read_json_object, write_json

FP32_NAME, PARITY_NAME = get_format("fp32").file_name, "parity.json"
MODEL_NAMES = FILE_NAMES  # every format's file (coreg_edge/formats.py)
STAGING_PREFIX = ".export-"


def remove_abandoned(out: Path) -> list[Path]:
    """Remove staging folders an earlier export left behind (killed with -9, power lost). The caller holds
    the export folder's lock (export_run), so no other export can be using one; returns what went."""
    removed = [folder for folder in out.glob(f"{STAGING_PREFIX}*") if folder.is_dir()]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def check_export_out(out: str | os.PathLike[str]) -> None:
    """--out is new, empty, or an earlier export folder (it has parity.json): an export refreshes its own
    folder, but never writes model files among someone else's (README: no command replaces a user's output)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a folder for model.onnx and parity.json")
    if out.is_dir() and not (out / PARITY_NAME).is_file():
        others = sorted(p.name for p in out.iterdir() if not is_lock_file(p) and not p.name.startswith(STAGING_PREFIX))
        if others:
            raise UserError(f"--out {out}: holds other files ({others[0]}, ...) and is no export folder (no "
                            f"{PARITY_NAME}); choose a new or empty folder (nothing was overwritten)")  # fmt: skip


def _earlier_checks(earlier: dict[str, Any], path: Path) -> dict[str, Any]:
    """The earlier report's checks of a kept file, when that report describes this very file (its size)."""
    entry = (earlier.get("files") or {}).get(path.name) or {}
    checks = (earlier.get("checks") or {}).get(path.name)
    if not isinstance(entry, dict) or entry.get("bytes") != path.stat().st_size or not checks:
        return {}
    return {"earlier_checks": checks}


class Staging:
    """A temporary folder next to the outputs (same filesystem, so publishing is a rename)."""

    def __init__(self, out: str | os.PathLike[str]):
        self.out = Path(out)
        check_export_out(self.out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_abandoned(self.out)
            self.folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out))
        except PermissionError:
            raise UserError(f"--out {self.out}: not writable") from None

    def path(self, name: str) -> Path:
        return self.folder / name

    def publish(self, passed: Iterable[str], failed: Iterable[str], report: dict[str, Any]) -> dict[str, Any]:
        """Move the models that passed into DIR, keep the failed ones as NAME.rejected (an earlier good file
        under NAME stays), then write parity.json with each file's status. Returns the report written."""
        passed, failed = list(passed), list(failed)
        files = dict(report.get("files") or {})
        earlier = read_json_object(self.out / PARITY_NAME)
        for name in passed:
            os.replace(self.path(name), self.out / name)
            (self.out / f"{name}{REJECTED_SUFFIX}").unlink(missing_ok=True)
            sides = [side for side in SIDE_FILES.get(name, ()) if self.path(side).is_file()]
            for side in sides:  # published with their file (an ORT file's operator list)
                os.replace(self.path(side), self.out / side)
            files[name] = {**files.get(name, {}), "published": True, **({"side_files": sides} if sides else {})}
        for name in failed:
            entry = {**files.get(name, {}), "published": False}
            if self.path(name).exists():  # this export made a candidate: keep it for inspection
                os.replace(self.path(name), self.out / f"{name}{REJECTED_SUFFIX}")
                entry["rejected_as"] = f"{name}{REJECTED_SUFFIX}"
            if (self.out / name).exists():
                entry["kept"] = f"an earlier export's {name} stays in place (not checked by this export)"
                entry.update(_earlier_checks(earlier, self.out / name))
            files[name] = entry
        for name in MODEL_NAMES:
            if not failed and name not in passed:  # a complete export: DIR is exactly what it made
                (self.out / name).unlink(missing_ok=True)
                (self.out / f"{name}{REJECTED_SUFFIX}").unlink(missing_ok=True)
                for side in SIDE_FILES.get(name, ()):
                    (self.out / side).unlink(missing_ok=True)
            elif name not in files and (self.out / name).exists():
                files[name] = {
                    "bytes": (self.out / name).stat().st_size,
                    "published": False,
                    "kept": f"an earlier export's {name} (not written or checked by this export)",
                    **_earlier_checks(earlier, self.out / name),
                }
        report = {**report, "files": files}
        write_json(self.out / PARITY_NAME, report)
        return report

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
