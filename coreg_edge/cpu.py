"""What the CPU offers for int8 inference, and how many threads to use; best effort, never an error.

int8 models are only faster than fp32 where the CPU has integer dot-product instructions (AVX512-VNNI,
AVX-VNNI, ARM dot-product); bench prints these in its header so a surprising ratio has an explanation.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import subprocess
from pathlib import Path

# /proc/cpuinfo flag (x86 "flags", ARM "Features") -> the name bench prints.
INT8_FLAGS = {
    "avx2": "AVX2",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
    "asimddp": "ARM-DOTPROD",
    "i8mm": "ARM-I8MM",
}
_DARWIN_SYSCTL = {"hw.optional.arm.FEAT_DotProd": "ARM-DOTPROD", "hw.optional.arm.FEAT_I8MM": "ARM-I8MM"}
_DOT_PRODUCT = {"AVX512-VNNI", "AVX-VNNI", "AMX-INT8", "ARM-DOTPROD", "ARM-I8MM"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> list[str]:
    """The int8-relevant flags named in a /proc/cpuinfo text, in INT8_FLAGS order."""
    present: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            present.update(value.split())
    return [name for flag, name in INT8_FLAGS.items() if flag in present]


@functools.lru_cache(maxsize=1)
def cpu_flags() -> tuple[str, ...]:
    """Int8-relevant CPU features of this machine; empty when they cannot be read."""
    if platform.system() == "Darwin":
        found = []
        for key, name in _DARWIN_SYSCTL.items():
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=2).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            if out.strip() == "1":
                found.append(name)
        return tuple(found)
    return tuple(parse_cpuinfo(_read("/proc/cpuinfo")))


# onnxruntime's int8 kernel families: which one a CPU runs decides which int8 settings are exact on it.
X86_VNNI, X86_AVX2, ARM64, UNKNOWN = "x86-vnni", "x86-avx2", "arm64", "unknown"
_VNNI = {"AVX512-VNNI", "AVX-VNNI", "AMX-INT8"}


def kernel_family(flags: tuple[str, ...] | list[str] | None = None, machine: str | None = None) -> str:
    """The int8 kernel family of a CPU (this one by default): "x86-vnni" (u8 x s8 products summed in 32
    bits), "x86-avx2" (any other x86-64: vpmaddubsw sums pairs in 16 bits and can saturate), "arm64", or
    "unknown"."""
    flags = cpu_flags() if flags is None else flags
    machine = (platform.machine() if machine is None else machine).lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        return X86_VNNI if _VNNI.intersection(flags) else X86_AVX2
    if machine in ("aarch64", "arm64") or machine.startswith(("armv7", "armv8")):
        return ARM64  # 32-bit ARM userlands too: onnxruntime's NEON kernels also accumulate in 32 bits
    return UNKNOWN


def has_int8_dot_product(flags: tuple[str, ...] | list[str]) -> bool:
    """True when int8 matrix products have a fast path (VNNI / dot-product)."""
    return bool(_DOT_PRODUCT.intersection(flags))


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name, or the machine architecture."""
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def available_cpus() -> int:
    """Logical CPUs this process may use: affinity mask, then a cgroup (container) CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _read("/sys/fs/cgroup/cpu.max").split()
    if len(quota) == 2 and quota[0] != "max":
        try:
            count = min(count, max(1, math.ceil(int(quota[0]) / int(quota[1]))))
        except (ValueError, ZeroDivisionError):
            pass
    return max(1, count)


def default_threads() -> int:
    """Physical cores available (onnxruntime's own default), so the reported thread count is the real one."""
    siblings = cores = 0
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "siblings" and value.strip().isdigit():
            siblings = int(value)
        elif key == "cpu cores" and value.strip().isdigit():
            cores = int(value)
    per_core = siblings // cores if siblings and cores and siblings >= cores else 1
    return max(1, available_cpus() // per_core)


def describe_machine() -> str:
    """'AMD EPYC, 2 CPUs, AVX2 + AVX512-VNNI': the line every benchmark prints beside its numbers (the int8
    kernels, and so speed and even trained weights, depend on these flags)."""
    flags = " + ".join(cpu_flags()) or "no AVX2 or dot-product flags"
    return f"{cpu_name()}, {available_cpus()} CPUs, {flags}"
