"""Every stage's options as frozen dataclasses, each field written once (fields.py says what is made of it).

torch-free, so the CLI builds its options from these and `--help` works on a device install; each
submodule loads on first use (the device's bench needs only BenchSettings).
"""

from coreg_edge.utils import lazy_exports

_EXPORTS = {
    "AnnotateSettings": ".annotate",
    "BenchSettings": ".bench",
    "ExportSettings": ".export",
    "SettingError": ".fields",
    "TrainSettings": ".train",
    "option": ".fields",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
