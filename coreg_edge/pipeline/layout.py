"""The run folder's names (see the package docstring) and the one JSON reader every part uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# How, not what: never part of a fingerprint (changing them must not re-run a stage); the same list that
# train --resume takes from a new call.

STAGES = ("annotate", "train", "export", "bench")
STATE_FORMAT_VERSION = 1
RECIPE_FILE = "recipe.json"
ANNOTATION_FILE = "annotation.npz"
TEMPLATES_FILE = "templates.txt"
TRAIN_DIR = "train"
EXPORT_DIR = "export"
BENCH_FILE = "bench.json"
STATE_FILE = "stages.json"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"  # coreg-edge report, written last


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
