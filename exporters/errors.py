"""Export errors: one line each, printed by the CLI's handle_errors."""

from __future__ import annotations

from typing import Any

from coreg_edge.errors import UserError


class ExportError(UserError):
    """The model could not be exported, checked or quantized."""


class ParityError(UserError):
    """An exported file failed a parity check; `report` is the parity report (also in parity.json)."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report
