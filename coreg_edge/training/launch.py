"""`coreg-edge train --nproc N`: torchrun for one machine, without typing torchrun.

It starts N copies of the same `coreg-edge train` command through PyTorch's own launcher (the elastic agent
behind `torchrun --standalone --nproc_per_node N`), so a run started this way is the same as one started
with `torchrun --nproc_per_node N -m coreg_edge train ...` (docs/SCALE.md). The workers print their own
lines (rank 0 speaks for the run); the launcher adds nothing and exits with the exit code of the worker that failed first.
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

from coreg_edge.errors import UserError

LAUNCHER_PID = "COREG_EDGE_LAUNCHER_PID"


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


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m coreg_edge ARGV...` in `nproc` processes on this machine; the exit code of the run."""
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1 (got {nproc})")
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
    from torch.distributed.elastic.multiprocessing.api import SignalException

    try:
        elastic_launch(config, sys.executable)("-m", "coreg_edge", *argv)
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


def watch_launcher(environ: dict[str, str] | None = None, interval: float = 0.5) -> None:
    """In a worker of `train --nproc`: stop when the launcher is gone (killed with SIGKILL, it cannot stop its
    workers, which run in their own sessions). The last finished epoch is saved, as after any kill."""
    env = os.environ if environ is None else environ
    if LAUNCHER_PID not in env:
        return
    launcher = int(env[LAUNCHER_PID])

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="coreg-edge-launcher-watch", daemon=True).start()
