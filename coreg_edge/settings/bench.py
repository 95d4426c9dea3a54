"""Runtime settings: what `coreg-edge bench` / `run_bench()` (and a recipe's [bench] table) and
`coreg-edge predict` take. Both run an ONNX file with onnxruntime, so they share RuntimeSettings."""

from __future__ import annotations

from dataclasses import dataclass

from coreg_edge.choices import PREDICT_FORMATS
from coreg_edge.settings.fields import check_fields, option, seed_field

DEFAULT_BATCH_SIZES = (1, 8, 32)


@dataclass(frozen=True)
class RuntimeSettings:
    """How onnxruntime runs a model on this device."""

    threads: int | None = option(help="onnxruntime intra-op threads [default: physical cores].", low=1)
    provider: str | None = option(
        help="onnxruntime execution providers, comma-separated (cpu, cuda, tensorrt, openvino, coreml, dml, ...); "
        "default from --device (auto = CUDA when this onnxruntime has it, else CPU).",
        recipe=False, fingerprint_if_set=True,
    )  # fmt: skip
    input_size: str | None = option(
        help="Model input size N or HxW, for an ONNX whose input size is neither in its metadata nor fixed.",
        recipe=False, fingerprint_if_set=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class BenchSettings(RuntimeSettings):
    """How a model is timed: batch sizes, runs per size, onnxruntime threads."""

    batch_sizes: tuple[int, ...] = option(DEFAULT_BATCH_SIZES, help="Comma-separated batch sizes to time.",
                                          low=1, metavar="N,N,...")  # fmt: skip
    warmup: int = option(5, help="Untimed runs per batch size.", low=0)
    iters: int = option(50, help="Timed runs per batch size.", low=1)
    seed: int = seed_field()

    def __post_init__(self) -> None:
        if isinstance(self.batch_sizes, list):  # a recipe's TOML list
            object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        check_fields(self)
        object.__setattr__(self, "batch_sizes", tuple(dict.fromkeys(self.batch_sizes)))  # each size once


@dataclass(frozen=True)
class PredictSettings(RuntimeSettings):
    """How `coreg-edge predict` answers: how many classes, in which format, how many images per call."""

    topk: int = option(5, help="Classes per image.", low=1, recipe=False)
    format: str = option("table", help="table for people; json = JSON lines {path, top: [{label, index, prob}]} or "
                         "{path, error}; csv = one row per image.", choices=PREDICT_FORMATS, recipe=False)  # fmt: skip
    batch_size: int = option(32, help="Images per model call.", low=1, recipe=False)
    classes: str | None = option(help="Class names a,b,c or a FILE (one per line, a JSON list, or an annotate "
                                 "classes table), for an ONNX without coreg_edge metadata.", recipe=False)  # fmt: skip
    mean: str | None = option(help="Normalisation mean, e.g. 0.485,0.456,0.406, for an ONNX without metadata.",
                              recipe=False)  # fmt: skip
    std: str | None = option(help="Normalisation std, e.g. 0.229,0.224,0.225, for an ONNX without metadata.",
                             recipe=False)  # fmt: skip
    reject: bool = option(False, help="Answer \"none of these\" (label null) when the top probability is below the "
                          "threshold the model carries (calibrated on held-out items at training).", recipe=False)  # fmt: skip
    reject_below: float | None = option(help="With --reject: this threshold instead of the model's.", low=0, high=1,
                                        metavar="P", recipe=False)  # fmt: skip
