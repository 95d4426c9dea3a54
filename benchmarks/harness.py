"""What every script in benchmarks/ shares: its arguments, the CPU line above its tables, its result file.

    from harness import log, machine_line, parser, write_result

    p = parser(__doc__, name="train_cost", suffix="{backbone}_{image_size}px")
    p.add_argument("--backbone", default="test_resnet")  # the script's own options
    args = p.parse_args()  # args.out: --out, or benchmarks/results/train_cost_<backbone>_<size>px.json
    ...
    print(machine_line(load=True))  # "CPU: <describe_machine()>; threads 2; load average ..."
    write_result(args.out, {"rows": rows}, args)  # + benchmark, cpu, args, started; atomic

Scripts run as `python benchmarks/NAME.py`, so this folder is on sys.path: `from harness import ...`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from coreg_edge.cpu import default_threads, describe_machine
from coreg_edge.logs import info as log
from coreg_edge.utils import write_json

__all__ = ["RESULTS", "load_average", "log", "machine_line", "parser", "record", "write_result"]

RESULTS = Path(__file__).resolve().parent / "results"
# The benchmark this process runs: its name, when it started and the load average then (set by parser()).
_run: dict[str, str] = {}

Suffix = str | Callable[[argparse.Namespace], str] | None


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose parsed --out defaults to RESULTS/<name>[_<suffix>].json."""

    def __init__(self, *, name: str, suffix: Suffix, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.benchmark, self.suffix = name, suffix

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, rest = super().parse_known_args(args, namespace)
        if getattr(parsed, "out", None) is None:
            parsed.out = default_out(self.benchmark, self.suffix, parsed)
        return parsed, rest


def default_out(name: str, suffix: Suffix, args: argparse.Namespace) -> Path:
    """RESULTS/<name>.json, or RESULTS/<name>_<suffix>.json: `suffix` is a str.format template over the
    arguments ("{backbone}_{image_size}px") or a function of them."""
    if suffix is None:
        return RESULTS / f"{name}.json"
    text = suffix.format(**vars(args)) if isinstance(suffix, str) else suffix(args)
    return RESULTS / f"{name}_{text}.json"


def parser(
    doc: str | None, *, name: str, suffix: Suffix = None, threads: int | None = None
) -> argparse.ArgumentParser:
    """The benchmark's argument parser: its module docstring as the description (kept as written), --out,
    and --threads (default `threads`) for the scripts that set a thread count; the script adds its own."""
    _run.update(
        name=name, started=datetime.now().astimezone().isoformat(timespec="seconds"), load=load_average()
    )
    p = _Parser(
        name=name, suffix=suffix, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shown = "" if suffix is None else "_" + (suffix if isinstance(suffix, str) else f"<{suffix.__name__}>")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help=f"where the result JSON goes (default: benchmarks/results/{name}{shown}.json)")  # fmt: skip
    if threads is not None:
        p.add_argument("--threads", type=int, default=threads, help=f"CPU threads (default: {threads})")
    return p


def load_average() -> str:
    """The 1, 5 and 15 minute load averages ("0.52 0.40 0.33"), or "n/a"."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def thread_count(threads: int | None = None) -> int:
    """`threads` if given; else torch's count when torch is already imported; else OMP_NUM_THREADS; else
    the physical cores (torch's and onnxruntime's own default)."""
    if threads:
        return threads
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() else default_threads()


def machine_line(threads: int | None = None, *, load: bool = False) -> str:
    """The line above every table: 'CPU: <describe_machine()>; threads N', with `load` (timed benchmarks)
    the load average when the benchmark started and now (timings are only as good as the machine's idleness)."""
    line = f"CPU: {describe_machine()}; threads {thread_count(threads)}"
    if load:
        line += f"; load average {_run.get('load', 'n/a')} at start, {load_average()} now"
    return line


def record(result: dict[str, Any], args: argparse.Namespace, *, name: str | None = None) -> dict[str, Any]:
    """The result file's object: benchmark, cpu, args (paths as strings), started, then the script's own keys
    (which win over the common ones)."""
    common = {
        "benchmark": name or _run.get("name") or Path(sys.argv[0]).stem,
        "cpu": describe_machine(),
        "args": {key: _plain(value) for key, value in vars(args).items()},
        "started": _run.get("started") or datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    return {**common, **result}


def write_result(path: str | os.PathLike[str], result: dict[str, Any], args: argparse.Namespace,
                 *, name: str | None = None) -> Path:  # fmt: skip
    """Write record(result, args) to `path` atomically (parent folders made) and say where on stderr."""
    path = Path(path)
    write_json(path, record(result, args, name=name))
    log(f"results: {path}")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
