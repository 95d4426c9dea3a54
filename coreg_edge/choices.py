"""The allowed values of every choice option, written once: the CLI's click.Choice, the recipe schema and
the library's own checks all read them from here (torch-free, so the CLI can import it)."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")
ON_OFF = ("auto", "on", "off")  # --compile, --amp, --channels-last
STRONG_AUGMENT = ("auto", "randaugment", "cutout", "weak")
WARMUP_VIEWS = ("weak", "strong")
SIMULATOR_PRESETS = ("easy", "hard")  # coreg_edge/annotate/simulated.py PRESETS
CANDIDATE_MODES = ("union-top1", "topk", "ratio")
EXPORT_PEERS = ("selected", "a", "b", "ensemble")
ACTIVATION_TYPES = ("uint8", "int8")
WEIGHT_TYPES = ("int8", "uint8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QAT_MODES = ("auto", "off", "force")  # coreg-edge export --qat (exporters/qat.py)
IMAGE_CACHES = ("auto", "memory", "disk")  # --cache: where training images wait (training/image_store.py)
LABEL_FORMATS = ("csv", "jsonl", "imagefolder")  # coreg-edge labels --format
PREDICT_FORMATS = ("table", "json", "csv")  # coreg-edge predict --format
