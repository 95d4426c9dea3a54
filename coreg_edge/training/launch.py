"""`coreg-edge train --nproc N`: torchrun for one machine, without typing torchrun.

It starts N copies of the same `coreg-edge train` command through PyTorch's own launcher (the elastic agent
behind `torchrun --standalone --nproc_per_node N`), so a run started this way is the same as one started
with `torchrun --nproc_per_node N -m coreg_edge train ...` (docs/SCALE.md). The workers print their own
lines (rank 0 speaks for the run); the launcher adds nothing and exits with the exit code of the worker that failed first.
N is at most the machine's devices (GPUs; CPU cores for gloo), and the workers die with the launcher.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence

from coreg_edge.cpu import available_cpus
from coreg_edge.errors import UserError

LAUNCHER_PID = "COREG_EDGE_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: What each worker runs (`python -c WORKER_BOOT ARGV...`): first it asks the kernel to kill it when the
#: launcher dies (die_with_launcher, before anything heavy is imported), then it is `python -m coreg_edge ARGV...`
#: as torchrun would start it. A launcher killed while it is still starting workers leaves none behind.
WORKER_BOOT = (
    "from coreg_edge.training.launch import die_with_launcher; die_with_launcher(); "
    "import runpy; runpy.run_module('coreg_edge', run_name='__main__', alter_sys=True)"
)
_watching = False  # this process already watches its launcher (the boot and __main__ both ask)


def worker_threads(nproc: int, environ: dict[str, str] | None = None) -> str:
    """OMP_NUM_THREADS for each worker: the user's, else the cores shared out (torchrun would say 1)."""
    env = os.environ if environ is None else environ
    if env.get("OMP_NUM_THREADS"):
        return env["OMP_NUM_THREADS"]
    return str(max(1, (os.cpu_count() or 1) // nproc))


def worker_args(argv: Sequence[str]) -> list[str]:
    """The command line as typed, less `--nproc N` (each worker is one process of the run)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            out.append(word)
    return out


def devices_for_processes(device: str) -> tuple[int, str]:
    """(how many processes this machine can run, what they are): one per GPU for CUDA (nccl: a GPU each,
    as distributed.py refuses two on one), one per CPU core this process may use for gloo."""
    from coreg_edge.utils import resolve_device  # lazy: tests replace coreg_edge.utils.resolve_device

    if resolve_device(device).startswith("cuda"):
        import torch  # lazy: `train --nproc` checks its arguments before torch loads

        count = torch.cuda.device_count()
        return count, f"{count} GPU{'s' if count != 1 else ''}"

    count = available_cpus()
    return count, f"{count} CPU core{'s' if count != 1 else ''} (gloo)"


def check_nproc(nproc: int, device: str) -> None:
    """Refuse more processes than devices, in one line before any starts: each loads torch and the data, so
    `--nproc 1000` on 2 cores would start a thousand and run none (they swap and never meet)."""
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1 (got {nproc})")
    limit, what = devices_for_processes(device)
    if nproc > limit:
        advice = f"use --nproc {limit} or fewer" if limit > 1 else "drop --nproc (one process)"
        raise UserError(f"--nproc {nproc}: this machine has {what}, one process each; {advice}")


def worker_command(argv: Sequence[str]) -> tuple[str, ...]:
    """The arguments after `python` that each worker runs: WORKER_BOOT, then ARGV."""
    return ("-c", WORKER_BOOT, *argv)


def launch(nproc: int, argv: Sequence[str], device: str = "auto") -> int:
    """Run `python -m coreg_edge ARGV...` in `nproc` processes on this machine; the exit code of the run."""
    check_nproc(nproc, device)
    # lazy: torch.distributed's launcher, only when `train --nproc N` launches
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.Logger.manager.loggerDict):  # the workers say what failed; torch sets levels per logger
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ["OMP_NUM_THREADS"] = worker_threads(nproc)
    os.environ[LAUNCHER_PID] = str(os.getpid())  # the workers stop when this process dies (watch_launcher)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
    )  # fmt: skip
    from torch.distributed.elastic.multiprocessing.api import SignalException  # lazy: as above

    try:
        elastic_launch(config, sys.executable)(*worker_command(argv))
    except ChildFailedError as exc:  # a worker that failed said why; one killed by a signal cannot
        rank, first = exc.get_first_failure()
        if first.exitcode > 0:
            return first.exitcode
        print(f"Error: {killed_line(rank, nproc, -first.exitcode, argv)}", file=sys.stderr, flush=True)
        return 128 - first.exitcode
    except KeyboardInterrupt:  # Ctrl-C: the workers saved what they had and said so
        return 130
    except SignalException as exc:  # SIGTERM, SIGHUP: the workers were stopped with it
        return 128 + int(exc.sigval)
    return 0


def killed_line(rank: int, nproc: int, signum: int, argv: Sequence[str]) -> str:
    """What the launcher says when a worker was killed (out of memory, kill -9): the worker could not."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    out = next((argv[i + 1] for i, word in enumerate(argv[:-1]) if word in ("--out", "-o")), None)
    out = out or next((word.split("=", 1)[1] for word in argv if word.startswith("--out=")), "RUN")
    return (f"process {rank} of {nproc} was killed ({name}; out of memory?); the finished epochs are saved: "
            f"coreg-edge train --resume --out {out}")  # fmt: skip


def die_with_launcher(environ: dict[str, str] | None = None) -> bool:
    """In a worker of `train --nproc`: the kernel kills this process with SIGKILL when its launcher dies
    (Linux PR_SET_PDEATHSIG), even while the worker is busy in C code; a launcher already gone before
    that is caught by its parent pid. False where the kernel cannot do it (not Linux): watch_launcher polls."""
    env = os.environ if environ is None else environ
    if LAUNCHER_PID not in env:
        return False
    armed = _parent_death_signal(signal.SIGKILL)
    if os.getppid() != int(env[LAUNCHER_PID]):  # the launcher died before the signal was armed
        _stop_group()
    return armed


def _parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # lazy: Linux only (prctl)

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stop_group() -> None:
    """SIGKILL this worker, with whatever it started (a worker leads its own session: its process group)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def watch_launcher(environ: dict[str, str] | None = None, interval: float = 0.5) -> None:
    """In a worker of `train --nproc`: stop when the launcher is gone (killed with SIGKILL, it cannot stop its
    workers, which run in their own sessions). The kernel does it at once where it can (die_with_launcher;
    it watches the launcher's thread that started the worker: the agent's, the launcher's main thread). A
    thread polls the parent pid as well (where the kernel cannot), and then stops the worker's own process
    group with it. The last finished epoch is saved, as after any kill."""
    global _watching
    env = os.environ if environ is None else environ
    if LAUNCHER_PID not in env or _watching:
        return
    _watching = True
    launcher = int(env[LAUNCHER_PID])
    die_with_launcher(env)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(interval)
        _stop_group()

    threading.Thread(target=watch, name="coreg-edge-launcher-watch", daemon=True).start()
