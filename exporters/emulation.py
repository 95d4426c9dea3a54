"""Run an ONNX file with another CPU's int8 kernels: onnxruntime under qemu user-mode emulation.

A parity check can only prove the kernels of the machine that runs it. onnxruntime picks its kernels from
CPUID, and `qemu-x86_64-static -cpu Haswell` answers CPUID as an AVX2 CPU without VNNI, so on any x86-64
host the same Python and onnxruntime run the x86-avx2 kernels (checked: the same int8 logits as a native
AVX2-only host). Not emulated: x86-vnni (qemu 7.2's TCG has no AVX512) and arm64 (onnxruntime's aarch64
wheel crashes on import under qemu-aarch64 7.2 user mode).

The parent writes the inputs to a .npy file; this file, run as a script by its path (so that the child
imports only numpy and onnxruntime, never torch), writes the requested outputs to a .npz file.
`COREG_EDGE_QEMU` names the qemu binary (`0` turns emulation off).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

try:
    from numpy._core._multiarray_umath import __cpu_features__
except ImportError:  # numpy < 2
    from numpy.core._multiarray_umath import __cpu_features__

X86_AVX2 = "x86-avx2"  # the same name as coreg_edge.cpu.X86_AVX2 (not imported: see the docstring)
# kernel family -> (qemu binary, -cpu model); families without a row cannot be emulated here.
EMULATED = {X86_AVX2: ("qemu-x86_64-static", "Haswell")}
# What the child's CPU must (True) and must not (False) report, as numpy's CPU dispatch sees CPUID: a qemu
# older than 7.2 has no AVX2 in TCG, and onnxruntime would quietly run its SSE kernels instead.
EXPECTED_FEATURES = {X86_AVX2: {"AVX2": True, "AVX512VNNI": False, "AVX512BW": False}}
ENV = "COREG_EDGE_QEMU"


@dataclass(frozen=True)
class Emulator:
    family: str
    binary: str
    cpu: str

    def describe(self) -> str:
        return f"{self.family} kernels emulated ({Path(self.binary).name} -cpu {self.cpu})"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "binary": self.binary, "cpu": self.cpu}


def find_emulator(family: str) -> Emulator | None:
    """The emulator for `family` on this machine, or None (no qemu, not an x86-64 host, or turned off)."""
    if family not in EMULATED or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    name, cpu = EMULATED[family]
    chosen = os.environ.get(ENV, "")
    if chosen == "0":
        return None
    binary = shutil.which(chosen or name)
    return Emulator(family, binary, cpu) if binary else None


class EmulationError(RuntimeError):
    pass


def run_emulated(
    emulator: Emulator,
    model: str | os.PathLike[str],
    inputs: Any,
    *,
    outputs: list[str] | None = None,
    batch_size: int = 32,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Run `model` on `inputs` (an (N, ...) float32 array, or a .npy path) under `emulator`; returns
    {output name: (N, ...) array}, every output of the file unless `outputs` names some."""
    with tempfile.TemporaryDirectory(prefix="coreg-edge-emulate-") as tmp:
        if isinstance(inputs, (str, os.PathLike)):
            source = str(inputs)
        else:
            source = os.path.join(tmp, "inputs.npy")
            np.save(source, np.ascontiguousarray(inputs, dtype=np.float32))
        result = os.path.join(tmp, "outputs.npz")
        command = [
            emulator.binary,
            "-cpu",
            emulator.cpu,
            sys.executable,
            __file__,
            str(model),
            source,
            result,
        ]
        command += ["--batch-size", str(batch_size)] + (["--outputs", ",".join(outputs)] if outputs else [])
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmulationError(f"{emulator.describe()}: {exc}") from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if "warning: TCG" not in line]
            raise EmulationError(
                f"{emulator.describe()} failed: {(lines or [f'exit {done.returncode}'])[-1]}"
            )
        check_features(emulator, done.stdout)
        with np.load(result) as data:
            return {name: data[name] for name in data.files}


def check_features(emulator: Emulator, reported: str) -> None:
    """Refuse results from an emulator whose CPU is not the family it stands for."""
    try:
        seen = json.loads(reported.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EmulationError(f"{emulator.describe()}: the child did not report its CPU features") from None
    wrong = [k for k, want in EXPECTED_FEATURES.get(emulator.family, {}).items() if bool(seen.get(k)) != want]
    if wrong:
        raise EmulationError(
            f"{emulator.describe()} does not present an {emulator.family} CPU ({', '.join(wrong)} "
            f"{'missing' if EXPECTED_FEATURES[emulator.family][wrong[0]] else 'present'}): qemu >= 7.2 is needed"
        )


def run_outputs(
    model: str | os.PathLike[str], inputs: Any, outputs: list[str] | None = None, batch_size: int = 32
) -> dict[str, Any]:
    """`model`'s outputs (all, or those named) on `inputs`, batch by batch, one onnxruntime thread: parity
    and sensitivity need the numbers, not the speed. Imports only numpy and onnxruntime."""
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), settings, providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in session.get_outputs()]
    feed = session.get_inputs()[0].name
    parts: dict[str, list[Any]] = {name: [] for name in names}
    for start in range(0, len(inputs), batch_size):
        batch = np.ascontiguousarray(inputs[start : start + batch_size], dtype=np.float32)
        for name, value in zip(names, session.run(names, {feed: batch}), strict=True):
            parts[name].append(value)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _main(argv: list[str]) -> int:
    """The child: python emulation.py MODEL INPUTS.npy OUT.npz [--batch-size B] [--outputs a,b]."""
    model, source, result, *rest = argv
    options = dict(zip(rest[::2], rest[1::2], strict=True))
    batch_size = int(options.get("--batch-size", 32))
    names = options["--outputs"].split(",") if "--outputs" in options else None
    values = run_outputs(model, np.load(source, mmap_mode="r"), outputs=names, batch_size=batch_size)
    np.savez(result, **values)
    print(json.dumps(_cpu_features()))  # what this (emulated) CPU offers, for check_features
    return 0


def _cpu_features() -> dict[str, bool]:
    return {name: bool(value) for name, value in __cpu_features__.items()}


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
