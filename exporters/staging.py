"""Outputs are built in a hidden staging folder inside DIR and published only after parity passes.

Publishing renames each model into place, then writes parity.json (ok=true) last, so a reader that sees
`ok: true` sees the files it describes. A failed export publishes parity.json with ok=false, keeps the
rejected candidates as `NAME.rejected` for inspection, and removes stale models under the final names:
nothing in DIR is presented as a good export.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.training.run_folder import write_json

FP32_NAME, INT8_NAME, PARITY_NAME = "model.onnx", "model.int8.onnx", "parity.json"
MODEL_NAMES = (FP32_NAME, INT8_NAME)
REJECTED_SUFFIX = ".rejected"


class Staging:
    """A temporary folder next to the outputs (same filesystem, so publishing is a rename)."""

    def __init__(self, out: str | os.PathLike[str]):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: is a file; give a folder for model.onnx and parity.json")
        self.out.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=".export-", dir=self.out))

    def path(self, name: str) -> Path:
        return self.folder / name

    def publish(self, names: Iterable[str], report: dict[str, Any]) -> None:
        """Move the checked models into DIR, drop stale ones this export did not write, then parity.json."""
        names = list(names)
        for name in names:
            os.replace(self.path(name), self.out / name)
        for name in MODEL_NAMES:
            (self.out / f"{name}{REJECTED_SUFFIX}").unlink(missing_ok=True)
            if name not in names:
                (self.out / name).unlink(missing_ok=True)
        write_json(self.out / PARITY_NAME, report)

    def reject(self, names: Iterable[str], report: dict[str, Any]) -> None:
        """Keep the candidates as NAME.rejected, remove every model under a final name, write parity.json."""
        for name in MODEL_NAMES:
            (self.out / name).unlink(missing_ok=True)
        for name in names:
            if self.path(name).exists():
                os.replace(self.path(name), self.out / f"{name}{REJECTED_SUFFIX}")
        write_json(self.out / PARITY_NAME, report)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
