"""The `coreg_edge` metadata inside an exported ONNX file: read, validate, complete with user overrides.

The exporter writes ONE `metadata_props` entry, key `coreg_edge`, whose value is a JSON object
(docs/FORMATS.md#onnx-model). A device reads it with onnxruntime's `custom_metadata_map`, so the file alone
says how to preprocess and how to name the outputs. A foreign ONNX (or one exported by hand) has no such
entry: the user then supplies what is missing (`--classes`, `--input-size`, `--mean`, `--std` on the command
line; `class_names=`, `input_size=`, `mean=`, `std=` in Python).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coreg_edge.classes import read_classes
from coreg_edge.errors import UserError

METADATA_KEY = "coreg_edge"
METADATA_FORMAT_VERSION = 1

# How messages name a setting the caller gave: the Python API's keyword (caller "python", the default of
# every function here) or the command line's flag (caller "cli", what predict and bench pass). A check names
# what its caller typed, so a notebook never reads about a flag it cannot pass.
CALLERS = ("python", "cli")
_NAMES = {
    "python": {"class_names": "class_names=", "input_size": "input_size=", "mean": "mean=", "std": "std=",
               "threads": "threads=", "batch_size": "batch_size=", "batch_sizes": "batch_sizes="},
    "cli": {"class_names": "--classes", "input_size": "--input-size", "mean": "--mean", "std": "--std",
            "threads": "--threads", "batch_size": "--batch-size", "batch_sizes": "--batch-sizes"},
}  # fmt: skip
# What each missing piece is called in messages, its setting, and an example value per caller.
_MISSING = {"class names": "class_names", "input size": "input_size", "mean": "mean", "std": "std"}
_EXAMPLES = {
    "python": {"class_names": "[...]", "input_size": "N", "mean": "(m, m, m)", "std": "(s, s, s)"},
    "cli": {"class_names": " a,b,c|FILE", "input_size": " N", "mean": " M[,M,M]", "std": " S[,S,S]"},
}


def setting_name(key: str, caller: str = "python") -> str:
    """How `caller` spells the setting `key` (a Classifier keyword): "threads=" for Python, "--threads" for
    the CLI; an unknown caller is a programming error, not a user's."""
    if caller not in CALLERS:
        raise ValueError(f"caller must be one of {', '.join(CALLERS)} (got {caller!r})")
    return _NAMES[caller].get(key, f"{key}=" if caller == "python" else "--" + key.replace("_", "-"))


def named_value(key: str, value: object, caller: str = "python") -> str:
    """A setting with the value given, as the caller wrote it: `input_size='big'` or `--input-size big`."""
    name = setting_name(key, caller)
    return f"{name}{value!r}" if caller == "python" else f"{name} {value}"


class ModelError(UserError):
    """A model file that cannot be used as given."""


class ModelNotFoundError(ModelError):
    """The model path does not exist."""


class NotOnnxError(ModelError):
    """The file exists but onnxruntime cannot load it as an ONNX model."""


class MetadataError(ModelError):
    """The `coreg_edge` metadata (or an override) is malformed or contradicts the model's shapes."""


class MissingMetadataError(MetadataError):
    """The model lacks metadata the runtime needs; the message names it and the overrides that supply it."""

    def __init__(self, source: str, missing: Sequence[str], has_entry: bool, caller: str = "python"):
        self.missing = tuple(missing)
        what = (
            f"its {METADATA_KEY} metadata lacks"
            if has_entry
            else f"it has no {METADATA_KEY} metadata: missing"
        )
        keys = [_MISSING[name] for name in self.missing]
        hint = (" " if caller == "cli" else ", ").join(f"{setting_name(key, caller)}{_EXAMPLES[caller][key]}"
                                                       for key in keys)  # fmt: skip
        super().__init__(f"{source}: {what} {', '.join(self.missing)}; to run it anyway pass {hint}")


@dataclass(frozen=True)
class MetadataOverrides:
    """Values the user supplies for a model without (or with wrong) metadata; None keeps the model's own."""

    class_names: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_strings(
        cls,
        classes: str | None = None,
        input_size: str | None = None,
        mean: str | None = None,
        std: str | None = None,
        *,
        caller: str = "cli",
    ) -> MetadataOverrides:
        """Parse the CLI spellings: `a,b,c` or a file (one name per line, or a JSON list), `N` or `HxW`, `m[,m,m]`."""
        return cls.parse(classes or None, input_size or None, mean or None, std or None, caller=caller)

    @classmethod
    def parse(
        cls,
        class_names: str | Sequence[str] | None = None,
        input_size: int | str | Sequence[int] | None = None,
        mean: float | str | Sequence[float] | None = None,
        std: float | str | Sequence[float] | None = None,
        *,
        caller: str = "python",
    ) -> MetadataOverrides:
        """Check and normalise what a caller gave (None: keep the model's own); errors name the caller's
        spelling of each setting (`caller`: "python" keywords, "cli" flags)."""
        return cls(
            class_names=parse_class_names(class_names, caller) if class_names is not None else None,
            input_size=parse_size(input_size, caller) if input_size is not None else None,
            mean=parse_floats(mean, "mean", caller) if mean is not None else None,
            std=parse_floats(std, "std", caller) if std is not None else None,
        )

    def given(self, caller: str = "python") -> list[str]:
        """The settings this override sets, as `caller` spells them (for messages)."""
        keys = ("class_names", "input_size", "mean", "std")
        return [setting_name(key, caller) for key in keys if getattr(self, key) is not None]


def parse_class_names(value: str | Sequence[str], caller: str = "python") -> tuple[str, ...]:
    """Class names in the project's one grammar (coreg_edge/classes.py: `a,b,c`, a list, a text file with one
    name per line, a JSON list, or a classes table); errors name the setting as `caller` spells it."""
    return read_classes(value, option=setting_name("class_names", caller).rstrip("=")).names


def parse_size(value: str | int | Sequence[int], caller: str = "python") -> tuple[int, int]:
    """`N` (square), `HxW` or `H,W` -> (H, W), both positive."""
    shown = named_value("input_size", value, caller)
    try:
        if isinstance(value, int):
            parts = [value]
        elif isinstance(value, str):
            parts = [int(part) for part in value.lower().replace("x", ",").split(",")]
        else:
            parts = [int(part) for part in value]
    except (TypeError, ValueError) as exc:
        raise UserError(f"{shown}: expected N or HxW, e.g. 224 or 160x224") from exc
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise UserError(f"{shown}: expected N or HxW with positive sizes")
    return parts[0], parts[1]


def parse_floats(value: str | float | Sequence[float], name: str, caller: str = "python") -> tuple[float, ...]:
    """`0.5` or `0.485,0.456,0.406` -> a tuple of finite floats; `name` is the setting (mean, std)."""
    shown = named_value(name.lstrip("-"), value, caller)
    try:
        if isinstance(value, str):
            numbers = tuple(float(part) for part in value.split(","))
        elif isinstance(value, (int, float)):
            numbers = (float(value),)
        else:
            numbers = tuple(float(part) for part in value)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"{shown}: expected numbers separated by commas, e.g. 0.5 or 0.485,0.456,0.406"
        ) from exc
    if not numbers or not all(math.isfinite(number) for number in numbers):
        raise UserError(f"{shown}: expected finite numbers")
    return numbers


def parse_metadata(custom_metadata_map: Mapping[str, str], source: str) -> dict[str, Any] | None:
    """The JSON object under key `coreg_edge`, or None when the model has no such entry."""
    raw = custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{source}: the {METADATA_KEY} metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise MetadataError(f"{source}: the {METADATA_KEY} metadata is not a JSON object")
    version = meta.get("format_version", METADATA_FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise MetadataError(f"{source}: metadata format_version must be a whole number (got {version!r})")
    if version > METADATA_FORMAT_VERSION:
        raise MetadataError(
            f"{source}: metadata format_version {version!r} is newer than this coreg-edge understands "
            f"({METADATA_FORMAT_VERSION}); upgrade: pip install -U coreg-edge"
        )
    return meta


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def resolve_metadata(
    found: Mapping[str, Any] | None,
    overrides: MetadataOverrides | None = None,
    *,
    input_shape: Sequence[Any] = (),
    output_shape: Sequence[Any] = (),
    source: str = "model",
    need_class_names: bool = True,
    need_normalisation: bool = True,
    caller: str = "python",
) -> dict[str, Any]:
    """Complete metadata: the file's, then the user's overrides, then what the ONNX shapes fix for certain.

    Raises MissingMetadataError naming every missing piece (and its override, as `caller` spells it) in one
    message. Bench passes need_class_names / need_normalisation False: random input only needs the shape.
    A contradiction with the graph blames the override that caused it, or else the file's own metadata.
    """
    meta: dict[str, Any] = dict(found or {})
    over = overrides or MetadataOverrides()
    static_c, static_h, static_w = (list(map(_static, input_shape[1:4])) + [None, None, None])[:3]
    static_classes = _static(output_shape[1]) if len(output_shape) == 2 else None
    missing: list[str] = []

    if over.class_names is not None:
        meta["class_names"] = list(over.class_names)
    if not meta.get("class_names"):
        if need_class_names:
            missing.append("class names")
        elif static_classes:
            meta["class_names"] = [str(index) for index in range(static_classes)]

    if over.input_size is not None:
        old_crop, old_resize = meta.get("crop") or meta.get("input_size"), meta.get("resize")
        height, width = over.input_size
        meta["input_size"] = [height, width]
        meta["crop"] = [height, width]
        if isinstance(old_resize, dict) and old_crop and old_resize.get("size"):
            # Keep the model's resize:crop ratio (e.g. 256:224) at the new size.
            scaled = max(height, width, round(old_resize["size"] * height / old_crop[0]))
            meta["resize"] = {**old_resize, "size": scaled}
        else:
            meta.pop("resize", None)
    if not meta.get("input_size"):
        if static_h and static_w:
            meta["input_size"] = [static_h, static_w]
        else:
            missing.append("input size")

    channels = meta.get("channels") or static_c
    for key, value in (("mean", over.mean), ("std", over.std)):
        if value is not None:
            meta[key] = list(value)
        if meta.get(key) is None:
            if need_normalisation:
                missing.append(key)
            else:
                meta[key] = [0.0 if key == "mean" else 1.0]
    if missing:
        raise MissingMetadataError(source, missing, has_entry=found is not None, caller=caller)

    channels = channels or (len(meta["mean"]) if len(meta["mean"]) in (1, 3) else 3)
    meta["channels"] = channels
    for key in ("mean", "std"):
        if len(meta[key]) == 1:
            meta[key] = list(meta[key]) * channels
    meta.setdefault("crop", list(meta["input_size"]))
    if not isinstance(meta.get("resize"), dict):
        meta["resize"] = {"rule": "shorter_side", "size": max(meta["crop"]), "interpolation": "bilinear"}
    meta.setdefault("format_version", METADATA_FORMAT_VERSION)
    _check_shapes(meta, (static_c, static_h, static_w, static_classes), over, source, caller)
    return meta


FILE_METADATA_WRONG = f"the model file's {METADATA_KEY} metadata is wrong"


def _check_shapes(
    meta: dict[str, Any], static: tuple[int | None, ...], over: MetadataOverrides, source: str, caller: str
) -> None:
    """Metadata that contradicts the graph would fail deep inside onnxruntime: say so plainly instead,
    blaming the override the caller gave, or else the file itself (never a flag nobody typed)."""
    c, h, w, k = static

    def blame(key: str) -> str:
        if getattr(over, key) is not None:
            return f"{setting_name(key, caller)} gives"
        return f"{FILE_METADATA_WRONG} (re-export it, or pass {setting_name(key, caller)}): it says"

    if c is not None and meta["channels"] != c:
        raise MetadataError(f"{source}: {FILE_METADATA_WRONG} (re-export it): it says {meta['channels']} "
                            f"channels but the model takes {c}")  # fmt: skip
    size = list(meta["input_size"])
    if h is not None and w is not None and size != [h, w]:
        raise MetadataError(f"{source}: {blame('input_size')} input size {size[0]}x{size[1]} but the model "
                            f"takes {h}x{w}")  # fmt: skip
    names = meta.get("class_names")
    if names and k is not None and len(names) != k:
        raise MetadataError(f"{source}: {blame('class_names')} {len(names)} class names but the model outputs "
                            f"{k} logits")  # fmt: skip


def dumps_metadata(meta: Mapping[str, Any]) -> str:
    """The exact string stored under `coreg_edge` (compact, key order kept)."""
    return json.dumps(dict(meta), separators=(",", ":"), ensure_ascii=False)
