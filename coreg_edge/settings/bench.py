"""Bench settings: what `run_bench()`, `coreg-edge bench` and a recipe's [bench] table take."""

from __future__ import annotations

from dataclasses import dataclass

from coreg_edge.settings.fields import check_fields, option, seed_field

DEFAULT_BATCH_SIZES = (1, 8, 32)


@dataclass(frozen=True)
class BenchSettings:
    """How a model is timed: batch sizes, runs per size, onnxruntime threads."""

    batch_sizes: tuple[int, ...] = option(DEFAULT_BATCH_SIZES, help="Comma-separated batch sizes to time.",
                                          low=1, metavar="N,N,...")  # fmt: skip
    threads: int | None = option(help="onnxruntime intra-op threads [default: physical cores].", low=1)
    warmup: int = option(5, help="Untimed runs per batch size.", low=0)
    iters: int = option(50, help="Timed runs per batch size.", low=1)
    seed: int = seed_field()

    def __post_init__(self) -> None:
        if isinstance(self.batch_sizes, list):  # a recipe's TOML list
            object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        check_fields(self)
        object.__setattr__(self, "batch_sizes", tuple(dict.fromkeys(self.batch_sizes)))  # each size once
