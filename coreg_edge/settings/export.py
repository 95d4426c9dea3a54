"""Export settings: what `export_run()`, `coreg-edge export` and a recipe's [export] table take."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from coreg_edge.choices import ACTIVATION_TYPES, CALIBRATION_METHODS, EXPORT_PEERS, QAT_MODES, WEIGHT_TYPES
from coreg_edge.exporters.targets import AUTO, TARGET_NAMES
from coreg_edge.formats import (
    FORMAT_NAMES,
    ORT_PLATFORMS,
    ORT_STYLES,
    ExportFormat,
    needs_int8,
    resolve_formats,
)
from coreg_edge.settings.fields import check_fields, device_field, option, seed_field


@dataclass(frozen=True)
class ExportSettings:
    """Which network goes to ONNX, how int8 is made for which CPU, and how parity is checked."""

    formats: tuple[str, ...] = option(
        ("fp32",), help="The files to write (see the formats table below); fp32 always, and each format's "
        "source (int8-ort needs int8). all: every format.", choices=(*FORMAT_NAMES, "all"), metavar="NAME,...",
    )
    int8: bool | None = option(
        help="--int8 adds model.int8.onnx (static QDQ quantization), as --formats fp32,int8; --no-int8 leaves "
        "int8 and int8-ort out even where --formats or a recipe lists them.",
    )
    target: str = option(
        AUTO,
        help="The CPU the int8 file is for (its settings; see the table below). auto: this machine's CPU.",
        choices=TARGET_NAMES,
    )
    recover: bool = option(
        True,
        help="When the target's int8 settings fail parity, try the recovery steps and ship the first that "
        "passes (--no-recover: fail at once).",
    )
    qat: str = option(
        "auto",
        help="Quantization-aware fine-tuning, the last int8 step: a copy of the network fine-tuned with the "
        "target's rounding towards its own predictions (no labels). auto: when no other attempt passes, or "
        "the one that passes keeps nodes in float (and --recover is on); force: always, and it ships when "
        "it passes; off: never.",
        choices=QAT_MODES,
    )
    qat_epochs: int = option(
        3, help="Epochs of quantization-aware fine-tuning (fewer when they would cost over 30% of the "
        "training's image passes).", low=1,
    )
    qat_images: int = option(2048, help="Training images quantization-aware fine-tuning uses.", low=1)
    device: str = device_field(execution=True)
    emulate: bool = option(
        True,
        help="Check a target this CPU cannot run with an emulator when one is installed (x86-avx2 on any "
        "x86-64: qemu-user-static).",
    )
    peer: str = option(
        "selected",
        help="Which network: the run's selected peer, a, b, or ensemble (mean of both peers' logits). "
        "With --check-only: the peer model.onnx's metadata names, unless given.",
        choices=EXPORT_PEERS,
    )
    opset: int | None = option(help="ONNX opset [default: 17; 18 with --dynamo].", low=13)
    calibration_images: int = option(256, help="Training images to calibrate int8 ranges on.", low=1)
    activation_type: str | None = option(help="Override the target's activation type.", choices=ACTIVATION_TYPES)
    weight_type: str | None = option(help="Override the target's weight type.", choices=WEIGHT_TYPES)
    per_channel: bool | None = option(help="Override the target's per-output-channel weight scales.")
    calibration_method: str | None = option(
        help="Override the target's calibration (how activation ranges are chosen).", choices=CALIBRATION_METHODS
    )
    reduce_range: bool | None = option(help="Override the target's 7-bit weights.")
    parity_images: int = option(
        256, help="Images parity needs at least (the whole evaluation split is always used).", low=1
    )
    batch_size: int = option(32, help="Batch size for parity and calibration (parity runs batched, as a device does).", low=2)
    dynamo: bool = option(False, help="Use torch.onnx's torch.export-based exporter (default: TorchScript).")
    data: str | None = option(
        help="Where the run's training images are now, when they moved since training (calibration and "
        "held-out parity images).",
        recipe=False,
    )
    eval_data: str | None = option(
        help="Where the run's evaluation images (parity) are now, when they moved.", recipe=False
    )
    ort_style: str = option(
        "fixed", help="ORT-format optimisation: fixed (optimised now, at level all, for --ort-platform) or "
        "runtime (basic now, the rest when the device loads it).", choices=ORT_STYLES,
    )
    ort_platform: str = option(
        "arm", help="The CPU the fixed-style ORT files are optimised for (arm: phones and boards; amd64: x86 "
        "boxes, adds x86-only layout optimisations).", choices=ORT_PLATFORMS,
    )
    seed: int = seed_field()

    def __post_init__(self) -> None:
        if isinstance(self.formats, (list, str)):  # a recipe's TOML list, or one name
            object.__setattr__(self, "formats", (self.formats,) if isinstance(self.formats, str) else tuple(self.formats))
        check_fields(self)
        dropped = [name for name in FORMAT_NAMES if name in self.formats and needs_int8(name)]
        if self.int8 is False and dropped:  # both asked for: say which wins, never drop a file silently
            warnings.warn(f"int8 is off (--no-int8, int8=false), so {', '.join(dropped)}, named in the formats "
                          f"asked for, {'is' if len(dropped) == 1 else 'are'} left out", UserWarning, stacklevel=3)  # fmt: skip

    def chosen_formats(self) -> tuple[ExportFormat, ...]:
        """The format rows this export writes, in table order (fp32 first)."""
        return resolve_formats(self.formats, self.int8)

    @property
    def fine_tunes(self) -> bool:
        """Whether int8 may fine-tune a copy (--qat force, or auto with recovery on)."""
        return self.qat == "force" or (self.qat == "auto" and self.recover)

    @property
    def makes_int8(self) -> bool:
        return any(row.name == "int8" for row in self.chosen_formats())

    def quantization_overrides(self) -> dict[str, object]:
        """The explicit int8 options (None: the target's own value)."""
        return {
            "activation_type": self.activation_type,
            "weight_type": self.weight_type,
            "per_channel": self.per_channel,
            "calibration_method": self.calibration_method,
            "reduce_range": self.reduce_range,
        }
