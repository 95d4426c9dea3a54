"""Every stage's options as frozen dataclasses, each field written once (fields.py says what is made of it).

torch-free, so the CLI builds its options from these and `--help` works on a device install; each
submodule loads on first use (the device's bench needs only BenchSettings).
"""

import importlib
from typing import Any

_EXPORTS = {
    "AnnotateSettings": "annotate",
    "BenchSettings": "bench",
    "ExportSettings": "export",
    "SettingError": "fields",
    "TrainSettings": "train",
    "option": "fields",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
