"""The training run folder: what `train` writes and `export` / `info` read.

    RUN/config.json        format_version, method, network (NetworkConfig), preprocess (the runtime's
                           PreprocessConfig metadata), class_names, annotation, annotator, data, eval_data,
                           settings (epochs, batch sizes, algorithm constants), seed
    RUN/peer_a.safetensors, RUN/peer_b.safetensors   final weights of each peer (b absent for baselines)
    RUN/selection.json     selected ("a"|"b"), reason, per-peer and ensemble scores, test accuracy
    RUN/metrics.jsonl      one JSON object per epoch
    RUN/checkpoint.pt      full resume state (weights_only=True loadable), rewritten every epoch

Weights are safetensors: nothing a user downloads can execute code.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from coreg_edge.errors import UserError
from coreg_edge.locks import lock_path, process_alive
from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.utils import atomic_path, one_line, read_json_object, write_json  # noqa: F401 - write_json: rf.write_json for callers

RUN_FORMAT_VERSION = 1
CONFIG = "config.json"
SELECTION = "selection.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
DIVERGED = "diverged.json"  # written when training stopped on a non-finite loss; resume may lower lr
PEERS = ("a", "b")


def peer_file(run: str | os.PathLike[str], peer: str) -> Path:
    return Path(run) / f"peer_{peer}.safetensors"


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"{path.parent}: not a finished coreg-edge run (no {path.name}); {what}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: corrupt JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: corrupt JSON (expected an object, got {type(data).__name__})")
    return data


def read_config(run: str | os.PathLike[str]) -> dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    config = read_json(run / CONFIG, "train one with `coreg-edge train`")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{run}: config.json format_version must be a whole number (got {version!r})")
    if version != RUN_FORMAT_VERSION:
        raise UserError(
            f"{run}: run format {version} is not supported (this coreg-edge reads {RUN_FORMAT_VERSION})"
        )
    return config


def read_selection(run: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(Path(run) / SELECTION, unfinished_advice(run))


def unfinished_advice(run: str | os.PathLike[str]) -> str:
    """What to do about a run without its final files: wait for the process still training it, else resume
    it (advising --resume for a run that trains would only meet its lock)."""
    holder = training_now(run)
    if holder is not None:
        return f"it is still training, in use by {holder}; wait for it to finish"
    return f"training has not finished (resume it: coreg-edge train --resume --out {run})"


def training_now(run: str | os.PathLike[str]) -> str | None:
    """The process training `run` now ("coreg-edge train (pid 4242, since 12:00:01)"), or None: no live process
    on this machine holds the run folder's lock. A lock file left by a killed run keeps its dead owner's pid,
    which a new process may have taken since: where the kernel lists its locks (/proc/locks), the file must
    be locked too."""
    try:
        path = lock_path(run)
        inode = path.stat().st_ino
    except OSError:
        return None
    record = read_json_object(path)
    pid = record.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or record.get("host") != socket.gethostname():
        return None
    if not process_alive(pid) or _flock_held(inode) is False:
        return None
    since = record.get("since")
    when = time.strftime(", since %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"{record.get('command') or 'coreg-edge train'} (pid {pid}{when})"


def _flock_held(inode: int) -> bool | None:
    """Whether a flock holds the file of this inode (Linux's /proc/locks); None where that cannot be read."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        words = line.split()
        if "FLOCK" in words and words[-3].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def read_metrics(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(run) / METRICS
    if not path.exists():
        return []
    metrics = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                metrics.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: corrupt JSON on line {number} ({exc})") from exc
    return metrics


CUT_SHORT = "cut short: the last line of a run still training, or of one stopped mid-write"


def metrics_rows(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """metrics.jsonl's rows, and the (line number, why) of each line left out, for readers of a run that may
    still be training (report, `info RUN`): a torn last line is normal then, so they show what they can and
    say what they skipped (never silently). Training itself reads its file strictly (read_metrics)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [], [(0, f"unreadable ({exc.strerror or type(exc).__name__})")]
    lines = text.splitlines()
    last = max((number for number, line in enumerate(lines, 1) if line.strip()), default=0)
    rows, skipped = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            cut = number == last and not text.endswith("\n")
            skipped.append((number, CUT_SHORT if cut else "not JSON"))
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            skipped.append((number, "not a JSON object"))
    return rows, skipped


def save_weights(module, path: str | os.PathLike[str]) -> None:
    """A module's state_dict as safetensors, atomically."""
    from safetensors.torch import save_file  # lazy: `info RUN` reads run folders on a device without torch

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def load_network(run: str | os.PathLike[str], peer: str = "a"):
    """Rebuild a peer (CoRegNetwork, eval mode, CPU) from the run's config and safetensors weights."""
    from safetensors import SafetensorError  # lazy: `info RUN` reads run folders on a device without torch
    from safetensors.torch import load_file

    from coreg_edge.models import NetworkConfig, network_from_config

    if peer not in PEERS:
        raise UserError(f"peer must be one of {', '.join(PEERS)} (got {peer!r})")
    config = read_config(run)
    path = peer_file(run, peer)
    if not path.exists():
        if not (Path(run) / SELECTION).exists():  # not finished: still training, or stopped
            raise UserError(f"{run}: has no weights for peer {peer} yet ({path.name}); {unfinished_advice(run)}")
        raise UserError(f"{run}: has no weights for peer {peer} ({path.name}); method {config.get('method')}")
    network = network_from_config(NetworkConfig.from_dict(config["network"]))
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        network.load_state_dict(weights)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"{path}: weights do not fit the run's network ({one_line(exc)})") from exc
    return network.eval()


def preprocess_config(run: str | os.PathLike[str]):
    """The runtime PreprocessConfig training evaluated with (export writes it into the ONNX metadata)."""
    return PreprocessConfig.from_metadata(read_config(run)["preprocess"])


def describe_run(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The `info RUN --json` summary: method, backbone, epochs, selected peer, test accuracy, best epoch."""
    config = read_config(run)
    metrics, skipped = metrics_rows(Path(run) / METRICS) if (Path(run) / METRICS).exists() else ([], [])
    finished = (Path(run) / SELECTION).exists()
    selection = read_selection(run) if finished else {}
    test = selection.get("test_accuracy") or {"a": None, "b": None, "ensemble": None, "selected": None}
    network, settings = config.get("network") or {}, config.get("settings") or {}  # absent: shown as n/a
    return {
        "kind": "run",
        "method": config.get("method"),
        "backbone": network.get("backbone"),
        "pretrained_backbone": settings.get("pretrained_backbone"),  # None: from scratch
        "image_size": network.get("image_size"),
        "epochs": settings.get("epochs"),
        "epochs_done": len(metrics),
        "metrics_lines_skipped": [f"line {number} ({why})" for number, why in skipped],
        "finished": finished,
        "selected": selection.get("selected"),
        "reason": selection.get("reason"),
        "test_accuracy": test,
        "best_epoch": selection.get("best_epoch"),
        "class_names": config.get("class_names"),
        "annotator": config.get("annotator"),
        "eval_data": config.get("eval_data"),
    }


def diverged(run: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The divergence record of a run that stopped on a non-finite loss (None when it did not)."""
    path = Path(run) / DIVERGED
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
