"""int8 targets: which quantization settings suit which CPU, one row each, and the recovery ladder.

onnxruntime runs an int8 QDQ file with other kernels on each CPU family, and the same settings are not
exact on all of them:

- x86-vnni: VNNI (vpdpbusd) sums u8 x s8 products in 32 bits, so U8S8 is exact and the fastest choice.
- x86-avx2: without VNNI, onnxruntime's u8 x s8 kernel (vpmaddubsw) adds pairs of products in 16 bits,
  which saturate (255 * 127 * 2 > 32767); 7-bit weights (reduce_range, |w| <= 64) fit and keep that kernel.
- arm64: onnxruntime's ARM kernels (SDOT/UDOT, or widening multiply-adds without dot-product) accumulate
  in 32 bits: no saturation; U8S8 per onnxruntime's guide (as fast as U8U8 on big cores, faster on small).
- portable: one file for a mixed fleet; 7-bit weights are exact on every kernel family above.

The measurements behind each row, and the commands that re-run them, are in docs/INT8.md
(`benchmarks/int8_targets.py`). `auto` is this machine's family (`coreg_edge.cpu.kernel_family`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from coreg_edge.choices import ACTIVATION_TYPES, CALIBRATION_METHODS, WEIGHT_TYPES
from coreg_edge.cpu import ARM64, UNKNOWN, X86_AVX2, X86_VNNI, kernel_family
from coreg_edge.errors import UserError

AUTO, PORTABLE = "auto", "portable"
#: What an attempt quantizes: the network as trained, or a copy made for int8 (and how `describe` says so).
SOURCES = {"trained": "", "bias-corrected": "bias-corrected", "fine-tuned": "fine-tuned (QAT)"}


@dataclass(frozen=True)
class QuantSettings:
    """What `--int8` does; the names are the CLI options' (`--activation-type uint8` -> activation_type)."""

    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    calibration_method: str = "minmax"
    reduce_range: bool = False  # 7-bit weights: u8 x s7 pair sums fit in 16 bits (no AVX2 saturation)
    nodes_to_exclude: tuple[str, ...] = ()  # nodes kept in float (the most sensitive ones, when recovering)
    source: str = "trained"  # which network is quantized: SOURCES (a bias-corrected or fine-tuned copy)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("--activation-type", self.activation_type, ACTIVATION_TYPES),
            ("--weight-type", self.weight_type, WEIGHT_TYPES),
            ("--calibration-method", self.calibration_method, CALIBRATION_METHODS),
            ("source", self.source, tuple(SOURCES)),
        ):
            if value not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "QDQ",
            "static": True,
            **asdict(self),
            "nodes_to_exclude": list(self.nodes_to_exclude),
        }

    def describe(self) -> str:
        """One line: "U8S8 per-channel minmax reduce-range, 3 nodes in float"."""
        short = {"uint8": "U8", "int8": "S8"}
        parts = [
            f"{short[self.activation_type]}{short[self.weight_type]}",
            "per-channel" if self.per_channel else "per-tensor",
            self.calibration_method,
        ]
        if self.reduce_range:
            parts.append("reduce-range")
        text = " ".join(parts)
        if self.nodes_to_exclude:
            count = len(self.nodes_to_exclude)
            text += f", {count} node{'s' if count > 1 else ''} in float"
        if self.source != "trained":
            text += f", {SOURCES[self.source]}"
        return text


@dataclass(frozen=True)
class Int8Target:
    """One row: a CPU family, the settings that hold on its kernels, and why."""

    name: str
    cpus: str
    settings: QuantSettings
    reason: str
    kernels: tuple[str, ...]  # kernel families whose results these settings are meant for

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cpus": self.cpus,
            "reason": self.reason,
            "settings": self.settings.to_dict(),
        }


TARGETS: dict[str, Int8Target] = {
    row.name: row
    for row in (
        Int8Target(
            X86_VNNI,
            "x86-64 with AVX512-VNNI, AVX-VNNI or AMX (Ice Lake+, Zen 4+)",
            QuantSettings(),
            "u8 x s8 sums in 32 bits: U8S8 exact and fastest (S8S8 and U8U8 slower: docs/INT8.md)",
            (X86_VNNI,),
        ),
        Int8Target(
            X86_AVX2,
            "x86-64 without VNNI (AVX2, AVX512 without VNNI)",
            QuantSettings(reduce_range=True),
            "vpmaddubsw sums pairs in 16 bits and saturates: 7-bit weights keep them exact and keep the "
            "fast kernel (docs/INT8.md)",
            (X86_AVX2,),
        ),
        Int8Target(
            ARM64,
            "ARM64 (Raspberry Pi 4/5, phones), with or without dot-product instructions",
            QuantSettings(),
            "ARM kernels accumulate in 32 bits: no saturation; U8S8 per onnxruntime's guide",
            (ARM64,),
        ),
        Int8Target(
            PORTABLE,
            "any CPU: one file for a mixed fleet",
            QuantSettings(reduce_range=True),
            "7-bit weights are exact on every kernel family (VNNI, AVX2, ARM)",
            (X86_VNNI, X86_AVX2, ARM64),
        ),
    )
}
TARGET_NAMES = (AUTO, *TARGETS)
_HOST_TARGET = {X86_VNNI: X86_VNNI, X86_AVX2: X86_AVX2, ARM64: ARM64, UNKNOWN: PORTABLE}


def resolve_target(name: str = AUTO, family: str | None = None) -> Int8Target:
    """A target row by name; `auto` is the row of `family` (this machine's kernel family by default)."""
    if name == AUTO:
        return TARGETS[_HOST_TARGET[family or kernel_family()]]
    try:
        return TARGETS[name]
    except KeyError:
        raise UserError(f"--target must be one of {', '.join(TARGET_NAMES)} (got {name!r})") from None


def apply_overrides(settings: QuantSettings, **overrides: Any) -> QuantSettings:
    """The target's settings with the user's explicit options (None = the target's value)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return replace(settings, **given) if given else settings


def recovery_ladder(first: QuantSettings) -> list[QuantSettings]:
    """What to try, in order, when `first` fails parity: each step removes one known cause of int8 error.

    1. reduce_range: 7-bit weights, no 16-bit saturation (the AVX2 case), fast kernel kept;
    2. U8U8: uint8 weights take another kernel without pair sums (slower on VNNI, exact everywhere);
    3. percentile calibration: activation ranges that ignore rare outliers;
    the steps that quantize a copy made for int8 (bias-corrected, fine-tuned) and keep the most sensitive
    nodes in float are added by the caller (int8.py): they need the network or a measurement.
    """
    steps = [
        first,
        replace(first, reduce_range=True),
        replace(first, activation_type="uint8", weight_type="uint8", reduce_range=False),
        replace(first, reduce_range=True, calibration_method="percentile"),
    ]
    ladder: list[QuantSettings] = []
    for step in steps:
        if step not in ladder:
            ladder.append(step)
    return ladder


def table() -> str:
    """The targets as a plain-text table (for `coreg-edge export --help` and docs)."""
    lines = [f"{'target':<10} {'settings':<38} cpus"]
    for row in TARGETS.values():
        lines.append(f"{row.name:<10} {row.settings.describe():<38} {row.cpus}")
    return "\n".join(lines)
