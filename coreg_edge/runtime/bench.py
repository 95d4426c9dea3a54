"""Latency and throughput of an ONNX model on this machine; optionally against a second model.

Input is random, normalised, of the model's own (C, H, W): latency of a fixed-shape CNN does not depend on
pixel values. With `vs`, the two models are timed INTERLEAVED (A B, B A, A B, ... per iteration) so
thermal drift, frequency changes and background load hit both equally, and idle worker threads do not spin
(they would steal cores from the other session).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from coreg_edge.cpu import cpu_flags, cpu_name, has_int8_dot_product, kernel_family
from coreg_edge.errors import UserError
from coreg_edge.runtime.metadata import MetadataOverrides, named_value, setting_name
from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.runtime.session import LoadedModel, load_model
from coreg_edge.settings.bench import BenchSettings
from coreg_edge.settings.fields import SettingError, build


@dataclass(frozen=True)
class LatencyStats:
    """Per-batch-size latency percentiles (ms) and throughput (images/s = batch size / mean latency)."""

    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float

    @classmethod
    def from_seconds(cls, batch_size: int, seconds: Sequence[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(
            batch_size, round(p50, 4), round(p90, 4), round(p99, 4), round(batch_size * 1000.0 / ms.mean(), 2)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "images_per_s": self.images_per_s,
        }




@dataclass(frozen=True)
class ModelBench:
    """One model's results and the conditions they were measured under."""

    model: str
    bytes: int
    provider: str
    threads: int
    cpu_flags: tuple[str, ...]
    results: tuple[LatencyStats, ...]
    cpu: str = ""
    int8_kernels: str = ""  # this CPU's int8 kernel family (coreg_edge.cpu.kernel_family)
    int8_target: str | None = None  # the CPU family an int8 file was quantized for (its metadata)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "bytes": self.bytes,
            "provider": self.provider,
            "threads": self.threads,
            "cpu_flags": list(self.cpu_flags),
            "cpu": self.cpu,
            "int8_kernels": self.int8_kernels,
            "int8_target": self.int8_target,
            "results": [result.to_dict() for result in self.results],
        }

    @property
    def target_note(self) -> str | None:
        """A warning when an int8 file was made for another CPU family than this one."""
        if self.int8_target in (None, "portable", self.int8_kernels):
            return None
        return (
            f"{Path(self.model).name} was quantized for {self.int8_target}; this CPU runs {self.int8_kernels} "
            "kernels, so its speed (and accuracy) here are not the target's"
        )


@dataclass(frozen=True)
class BenchReport:
    """What `coreg-edge bench --json` prints: the model's fields, plus `vs` and `ratios` when comparing."""

    main: ModelBench
    vs: ModelBench | None = None
    differences: tuple[str, ...] = ()  # how the two models differ beyond their numbers (classes, input)
    warmup: int = 0
    iters: int = 0

    @property
    def ratios(self) -> list[dict[str, Any]]:
        """Per batch size, vs / model for each latency percentile and for throughput."""
        if self.vs is None:
            return []
        rows = []
        for a, b in zip(self.main.results, self.vs.results, strict=True):
            rows.append(
                {
                    "batch_size": a.batch_size,
                    "p50_ratio": _ratio(b.p50_ms, a.p50_ms),
                    "p90_ratio": _ratio(b.p90_ms, a.p90_ms),
                    "p99_ratio": _ratio(b.p99_ms, a.p99_ms),
                    "images_per_s_ratio": _ratio(b.images_per_s, a.images_per_s),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        out = self.main.to_dict()
        if self.vs is not None:
            out["vs"] = self.vs.to_dict()
            out["ratios"] = self.ratios
            out["differences"] = list(self.differences)
        return out


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator > 0 else None


def random_input(config: PreprocessConfig, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 (N, C, H, W) batch distributed like real normalised images: uniform [0, 1) then (x-mean)/std."""
    pixels = rng.random((batch_size, *config.shape), dtype=np.float32)
    mean = np.asarray(config.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (pixels - mean) / std


def _check_fixed_batch(batch_sizes: Sequence[int], models: Sequence[LoadedModel], caller: str = "python") -> None:
    for model in models:
        wrong = [size for size in batch_sizes if model.fixed_batch and size != model.fixed_batch]
        if wrong:
            fixed = model.fixed_batch if caller == "cli" else (model.fixed_batch,)
            raise UserError(
                f"{model.path} has a fixed batch size of {model.fixed_batch}; use "
                f"{named_value('batch_sizes', fixed, caller)}"
            )


def bench_settings(settings: BenchSettings | None, options: dict[str, Any], caller: str = "python") -> BenchSettings:
    """The settings from an object and/or keywords; a bad keyword's error names the keyword (threads=),
    not the flag: the command line checked its own values when it built the object."""
    try:
        return build(BenchSettings, settings, options)
    except SettingError as exc:
        if caller == "cli":
            raise
        raise SettingError(exc.field, exc.problem, flag=setting_name(exc.field, caller)) from None


def run_bench(
    model: str | os.PathLike[str],
    settings: BenchSettings | None = None,
    *,
    vs: str | os.PathLike[str] | None = None,
    providers: str | Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    progress: bool = False,
    caller: str = "python",
    **options: Any,
) -> BenchReport:
    """Time `model` (and `vs`, interleaved) at each batch size; `iters` timed runs after `warmup` untimed ones.

    `settings` (a BenchSettings) and/or its fields as keywords (keywords win). `caller` ("python" or
    "cli"): how errors name the settings."""
    s = bench_settings(settings, options, caller)
    paths = [model] if vs is None else [model, vs]
    opened, benches = time_models(paths, s, providers=providers, input_size=input_size, progress=progress,
                                  caller=caller)  # fmt: skip
    return BenchReport(
        main=benches[0],
        vs=benches[1] if len(benches) > 1 else None,
        warmup=s.warmup,
        iters=s.iters,
        differences=tuple(model_differences(*opened)) if len(opened) > 1 else (),
    )


def time_models(
    paths: Sequence[str | os.PathLike[str]],
    s: BenchSettings,
    *,
    providers: str | Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    progress: bool = False,
    caller: str = "python",
    opened: Sequence[LoadedModel] | None = None,
) -> tuple[list[LoadedModel], list[ModelBench]]:
    """Every model timed at each batch size, interleaved when there are several (each iteration runs
    all of them, alternating the order), so machine noise hits them alike. `opened`: the models of
    `paths` opened already (open_for_bench)."""
    batch_sizes, warmup, iters = s.batch_sizes, s.warmup, s.iters
    if opened is None:
        opened = [open_for_bench(path, s, providers=providers, input_size=input_size, caller=caller,
                                 spinning=len(paths) == 1) for path in paths]  # fmt: skip
    opened = list(opened)
    _check_fixed_batch(batch_sizes, opened, caller)
    rng = np.random.default_rng(s.seed)
    seconds: list[dict[int, list[float]]] = [{} for _ in opened]
    bar = tqdm(
        total=len(batch_sizes) * (warmup + iters),
        desc="bench",
        unit="iter",
        disable=not progress or not sys.stderr.isatty(),
        file=sys.stderr,
    )
    with bar:
        for size in batch_sizes:
            try:
                inputs = [random_input(m.config, size, rng) for m in opened]
            except MemoryError as exc:
                raise UserError(
                    f"{setting_name('batch_sizes', caller)}{' ' if caller == 'cli' else ''}{size}: not enough "
                    "memory for one batch; use smaller batch sizes"
                ) from exc
            for _ in range(warmup):
                for m, x in zip(opened, inputs, strict=True):
                    m.run(x)
                bar.update()
            for j in range(len(opened)):
                seconds[j][size] = []
            for i in range(iters):
                # Alternate the order too, so no model always runs right after another.
                for j in range(len(opened)) if i % 2 == 0 else reversed(range(len(opened))):
                    start = time.perf_counter()
                    opened[j].run(inputs[j])
                    seconds[j][size].append(time.perf_counter() - start)
                bar.update()
    flags = cpu_flags()
    benches = [
        ModelBench(
            model=str(m.path),
            bytes=m.bytes,
            provider=m.provider,
            threads=m.threads,
            cpu_flags=flags,
            results=tuple(LatencyStats.from_seconds(size, seconds[j][size]) for size in batch_sizes),
            cpu=cpu_name(),
            int8_kernels=kernel_family(flags),
            int8_target=_int8_target(m.metadata),
        )
        for j, m in enumerate(opened)
    ]
    return opened, benches


def open_for_bench(
    path: str | os.PathLike[str],
    s: BenchSettings,
    *,
    providers: str | Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    caller: str = "python",
    spinning: bool = False,
) -> LoadedModel:
    """One model opened as bench runs it: random input needs neither class names nor normalisation."""
    return load_model(
        path,
        threads=s.threads,
        providers=providers,
        overrides=MetadataOverrides(input_size=input_size),
        need_class_names=False,
        need_normalisation=False,
        spinning=spinning,
        caller=caller,
    )


def model_differences(first: LoadedModel, second: LoadedModel) -> list[str]:
    """What makes a side-by-side comparison of two models misleading: other classes, another input."""
    found = []
    if tuple(first.config.shape) != tuple(second.config.shape):
        found.append(f"input {tuple(first.config.shape)} vs {tuple(second.config.shape)}")
    names = [m.metadata.get("class_names") if isinstance(m.metadata, dict) else None for m in (first, second)]
    if names[0] and names[1] and list(names[0]) != list(names[1]):
        found.append(f"{len(names[0])} classes vs {len(names[1])}" if len(names[0]) != len(names[1])
                     else "other class names")  # fmt: skip
    return found


def _int8_target(metadata: Any) -> str | None:
    quantization = metadata.get("quantization") if isinstance(metadata, dict) else None
    target = quantization.get("target") if isinstance(quantization, dict) else None
    return target if isinstance(target, str) else None


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def format_report(report: BenchReport) -> str:
    """A plain-text table: a header (machine, provider, threads, int8 flags) and one row per batch size."""
    main, vs = report.main, report.vs
    flags = " ".join(main.cpu_flags) or "none detected"
    lines = [
        f"cpu       {main.cpu or cpu_name()} | int8 flags: {flags} | int8 kernels: {main.int8_kernels or '?'}",
        f"provider  {main.provider} | threads {main.threads} | {report.warmup} warm-up + {report.iters} timed iterations",
        f"model     {main.model} ({_megabytes(main.bytes)})",
    ]
    if not has_int8_dot_product(main.cpu_flags):
        lines.append("note      no VNNI / dot-product instructions: int8 may not beat fp32 on this CPU")
    for bench in (main, vs):
        if bench is not None and bench.target_note:
            lines.append(f"note      {bench.target_note}")
    if vs is None:
        lines.append(f"{'batch':>5}  {'p50 ms':>9}  {'p90 ms':>9}  {'p99 ms':>9}  {'images/s':>10}")
        for r in main.results:
            lines.append(
                f"{r.batch_size:>5}  {r.p50_ms:>9.3f}  {r.p90_ms:>9.3f}  {r.p99_ms:>9.3f}  {r.images_per_s:>10.1f}"
            )
        return "\n".join(lines)
    lines.append(f"vs        {vs.model} ({_megabytes(vs.bytes)}; size ratio {vs.bytes / main.bytes:.3f})")
    if report.differences:
        lines.append(
            f"note      not the same model: {'; '.join(report.differences)} (the ratios compare unlike work)"
        )
    lines.append("          measured interleaved; ratios are vs / model (p50 < 1: vs is faster)")
    lines.append(
        f"{'batch':>5}  {'p50 ms':>9}  {'vs p50':>9}  {'p50 ratio':>9}  {'images/s':>10}  {'vs img/s':>10}  {'speed-up':>8}"
    )
    for a, b, ratio in zip(main.results, vs.results, report.ratios, strict=True):
        speedup = a.p50_ms / b.p50_ms if b.p50_ms > 0 else float("nan")
        lines.append(
            f"{a.batch_size:>5}  {a.p50_ms:>9.3f}  {b.p50_ms:>9.3f}  {ratio['p50_ratio'] or float('nan'):>9.3f}  "
            f"{a.images_per_s:>10.1f}  {b.images_per_s:>10.1f}  {speedup:>7.2f}x"
        )
    return "\n".join(lines)
