"""int8 for a target CPU: quantize, check parity on the target's kernels, recover when a check fails.

route      where int8 logits come from: this CPU's kernels when they are the target's, else an
           emulator's (emulation.py), else this CPU's with a plain note that they are not the target's
attempts   the target's settings, then (unless --no-recover) the recovery ladder (targets.py), then
           the same with the most sensitive nodes kept in float (sensitivity.py); the first attempt
           that passes every int8 check ships, each attempt is recorded (settings, checks, seconds).
           Before nodes are kept in float: a bias-corrected copy (bias_correction.py). Last (--qat,
           qat.py): a copy fine-tuned under the target's rounding, when nothing passed or what passed
           keeps nodes in float; when it passes it ships instead (no float node)
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from coreg_edge.cpu import X86_AVX2, X86_VNNI, cpu_flags, cpu_name, kernel_family
from coreg_edge.exporters.emulation import EmulationError, Emulator, find_emulator, run_emulated
from coreg_edge.exporters.errors import ExportError
from coreg_edge.exporters.parity import Thresholds, cosine, failed_check
from coreg_edge.exporters.quantize import QuantSettings, quantize
from coreg_edge.exporters.sensitivity import host_runner, rank_nodes
from coreg_edge.exporters.targets import Int8Target, recovery_ladder
from coreg_edge.formats import get_format
from coreg_edge.utils import one_line

# How many of the most sensitive nodes the last recovery steps keep in float.
EXCLUDE_STEPS = (2, 5)
SENSITIVITY_IMAGES = 64


@dataclass(frozen=True)
class Route:
    """Which kernels compute the int8 logits parity judges."""

    target: str
    host: str
    kernels: str
    faithful: bool
    note: str
    emulator: Emulator | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": {"cpu": cpu_name(), "cpu_flags": list(cpu_flags()), "kernels": self.host},
            "checked_with": self.kernels,
            "emulator": self.emulator.to_dict() if self.emulator else None,
            "faithful": self.faithful,
            "note": self.note,
        }


def _unfaithful_note(target: Int8Target, host: str, emulate: bool) -> str:
    wanted = " / ".join(target.kernels)
    if X86_AVX2 in target.kernels and host.startswith("x86"):
        why = "--no-emulate" if not emulate else "install qemu-user-static to check them with emulated AVX2"
    elif target.kernels == (X86_VNNI,) and host == X86_AVX2:
        why = "VNNI cannot be emulated here; AVX2 kernels can only be less exact than VNNI's"
    else:
        why = f"re-check on a {wanted} machine with coreg-edge[train]: coreg-edge export RUN --out DIR --check-only"
    return f"this {host} CPU cannot run {wanted} kernels: checked with its own {host} kernels instead ({why})"


def choose_route(target: Int8Target, *, host: str | None = None, emulate: bool = True) -> Route:
    """The most faithful way this machine can compute `target`'s int8 logits."""
    host = host or kernel_family()
    if host in target.kernels:
        note = f"checked on this CPU's {host} kernels"
        if len(target.kernels) > 1:
            note += f" ({target.name}: the settings are meant to be exact on {', '.join(target.kernels)})"
        return Route(target.name, host, host, True, note)
    if emulate:
        for family in target.kernels:
            emulator = find_emulator(family)
            if emulator is not None:
                return Route(target.name, host, family, True, f"checked with {emulator.describe()}", emulator)
    return Route(target.name, host, host, False, _unfaithful_note(target, host, emulate))


def route_outputs(route: Route, path: Path, inputs: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """`path`'s outputs on `inputs` through the route's kernels."""
    if route.emulator is None:
        return host_runner(path, inputs, outputs)
    try:
        return run_emulated(route.emulator, path, inputs, outputs=outputs)
    except EmulationError as exc:
        raise EmulatorFailed(f"int8 parity: {exc} (--no-emulate checks on this CPU's kernels)") from exc


class EmulatorFailed(ExportError):
    """The emulator itself failed: every attempt would fail the same way, so the ladder stops."""


@dataclass
class Int8Outcome:
    """What quantize_for_target did: every attempt, the shipped one (None when none passed)."""

    route: Route
    attempts: list[dict[str, Any]] = field(default_factory=list)
    shipped: int | None = None
    logits: np.ndarray | None = None  # the shipped (else the best) file's logits
    best: int | None = None

    @property
    def settings(self) -> QuantSettings | None:
        index = self.shipped if self.shipped is not None else self.best
        return None if index is None else self.attempts[index]["_settings"]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.route.to_dict(),
            "recovered": self.shipped is not None and self.shipped > 0 and not self.attempts[0]["ok"],
            "shipped": self.shipped,
            "best": self.best,
            "attempts": [{k: v for k, v in a.items() if not k.startswith("_")} for a in self.attempts],
        }


#: Prepares the copy an attempt quantizes when its settings name another source than "trained":
#: returns that copy's pre-processed ONNX file and a record of what was done (int8_sources.prepare_source).
Prepare = Callable[[QuantSettings], tuple[Path, dict[str, Any]]]


def wants_fine_tuning(mode: str, outcome: Int8Outcome) -> bool:
    """--qat: force always; auto when no attempt passed, or the one that passed keeps nodes in float."""
    if mode == "force":
        return True
    if mode != "auto":
        return False
    return outcome.shipped is None or bool(outcome.attempts[outcome.shipped]["_settings"].nodes_to_exclude)


def quantize_for_target(
    pre_processed: Path,
    folder: Path,
    *,
    settings: QuantSettings,
    route: Route,
    reference: np.ndarray,
    inputs: np.ndarray,
    labels: np.ndarray,
    limits: Thresholds,
    reader: Callable[[QuantSettings], Any],
    finish: Callable[[Path, QuantSettings], None],
    recover: bool = True,
    prepare: Prepare | None = None,
    qat: str = "off",
    log: Callable[[str], None] = lambda _: None,
    output_name: str = "logits",
) -> Int8Outcome:
    """Quantize `pre_processed` with `settings` (then the recovery steps) until one passes the int8 checks.

    Each candidate is written to `folder`; `finish(path, settings)` adds metadata and checks the file. The
    shipped candidate ends as `folder/model.int8.onnx`; when none passes, the best one (highest mean
    cosine) stays there for inspection. `reader(settings)` returns a fresh calibration reader.
    `prepare` makes the copies the last steps quantize: bias-corrected (before nodes are kept in float)
    and, per `qat` (wants_fine_tuning), fine-tuned after every other step; a fine-tuned file that passes
    ships in place of one that keeps nodes in float.
    """
    outcome = Int8Outcome(route)
    target = folder / get_format("int8").file_name
    steps: list[QuantSettings | int] = list(recovery_ladder(settings) if recover else [settings])
    if recover and prepare is not None:
        steps.append(replace(settings, source="bias-corrected"))
    if recover:
        steps += list(EXCLUDE_STEPS)
    best_cosine = -np.inf
    ranked: list[dict[str, Any]] = []

    def attempt(step: QuantSettings) -> bool:
        """One quantization (of the network, or of the copy `step.source` names), checked; its file
        replaces the kept one when it passes, or when nothing passed yet and it is the closest so far.
        True when it passes."""
        nonlocal best_cosine, ranked
        number = len(outcome.attempts) + 1
        record: dict[str, Any] = {"attempt": number, "settings": step.to_dict(), "settings_text": step.describe()}
        record.update(checks={}, ok=False, reason=None, _settings=step)
        candidate = folder / f"model.int8.attempt{number}.onnx"
        began = time.perf_counter()
        try:  # a setting onnxruntime cannot build or run is recorded; the ladder goes on
            source = pre_processed
            if prepare is not None and step.source != "trained":  # only steps that `prepare` allows name one
                source, record["prepared"] = prepare(step)
            quantize(source, candidate, reader(step), step)
            finish(candidate, step)
            logits = route_outputs(route, candidate, inputs, [output_name])[output_name]
        except EmulatorFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
            if not recover and step.source == "trained":
                raise ExportError(f"int8 ({step.describe()}): {one_line(exc)}") from exc
            record.update(reason=f"failed: {one_line(exc)}", seconds=round(time.perf_counter() - began, 3))
            outcome.attempts.append(record)
            log(f"int8 attempt {number}: {step.describe()}: {record['reason']}")
            candidate.unlink(missing_ok=True)
            return False
        record["checks"] = limits.of("int8").run(reference, logits, labels)
        record["reason"] = failed_check(record["checks"])
        record["ok"] = record["reason"] is None
        if step.nodes_to_exclude:
            record["excluded"] = [row for row in ranked if row["node"] in step.nodes_to_exclude]
        if number == 1 and not record["ok"] and recover:  # diagnose the target's own file once
            try:
                ranked = _rank(pre_processed, candidate, route, inputs[:SENSITIVITY_IMAGES])
                record["most_sensitive"] = ranked[: max(EXCLUDE_STEPS)]
            except Exception as exc:  # noqa: BLE001 - a diagnosis that fails only loses its steps
                record["sensitivity_error"] = one_line(exc)
        record["seconds"] = round(time.perf_counter() - began, 3)
        outcome.attempts.append(record)
        log(f"int8 attempt {number}: {step.describe()}: {'ok' if record['ok'] else record['reason']}")
        mean_cosine = (
            float(np.nan_to_num(cosine(reference, logits).mean(), nan=-1.0)) if len(logits) else -1.0
        )
        closest = outcome.shipped is None and (outcome.best is None or mean_cosine > best_cosine)
        if record["ok"] or closest:
            best_cosine = mean_cosine
            outcome.best, outcome.logits = len(outcome.attempts) - 1, logits
            os.replace(candidate, target)
        else:
            candidate.unlink(missing_ok=True)
        if record["ok"]:
            outcome.shipped = len(outcome.attempts) - 1
        return record["ok"]

    for step in steps:
        if isinstance(step, int):  # the target's settings, the `step` most sensitive nodes kept in float
            chosen = tuple(row["node"] for row in ranked[:step])
            if not chosen or chosen == outcome.attempts[-1]["_settings"].nodes_to_exclude:
                continue
            step = replace(settings, nodes_to_exclude=chosen)
        if attempt(step):
            break
    if prepare is not None and wants_fine_tuning(qat, outcome):
        log(f"int8: fine-tuning a copy with {settings.describe()} rounding (--qat {qat})")
        attempt(replace(settings, source="fine-tuned"))
    if outcome.best is None:
        reasons = "; ".join(f"{a['settings_text']}: {a['reason']}" for a in outcome.attempts)
        raise ExportError(f"int8: no attempt produced a file that runs ({reasons})")
    return outcome


def _rank(pre_processed: Path, int8_file: Path, route: Route, inputs: np.ndarray) -> list[dict[str, Any]]:
    """Per-node error of `int8_file`, measured through the route's kernels (JSON-safe numbers)."""
    def safe(value: float) -> float | None:
        return round(value, 3) if np.isfinite(value) else None

    return [
        {**row, **{key: safe(row[key]) for key in ("sqnr_in", "sqnr_out", "loss_db")}}
        for row in rank_nodes(pre_processed, int8_file, inputs, functools.partial(route_outputs, route))
    ]
