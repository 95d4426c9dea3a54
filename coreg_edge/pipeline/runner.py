"""run_recipe(): the entry point; the run-folder guard, the data-dir environment, interruptions."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from coreg_edge.errors import MissingExtraError, UserError
from coreg_edge.locks import exclusive, is_lock_file
from coreg_edge.logs import info, quieted
from coreg_edge.pipeline.layout import RECIPE_FILE, REPORT_FILE, STAGES, STATE_FILE, SUMMARY_FILE, _read
from coreg_edge.pipeline.stages import _Run
from coreg_edge.pipeline.summary import build_summary
from coreg_edge.recipe import Recipe, load_recipe
from coreg_edge.report import write_report
from coreg_edge.training.trainer import Interrupted
from coreg_edge.utils import one_line, write_json


class PipelineInterrupted(UserError):
    """Ctrl-C (or a kill) during a stage; finished stages are kept and the next run continues."""

    exit_code = 130


@contextlib.contextmanager
def _data_dir(data_dir: str | None) -> Iterator[None]:
    """Built-in datasets are found through COREG_EDGE_DATA in every stage; set it for this run only."""
    if not data_dir:
        yield
        return
    before = os.environ.get("COREG_EDGE_DATA")
    os.environ["COREG_EDGE_DATA"] = str(Path(data_dir).expanduser())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COREG_EDGE_DATA", None)
        else:
            os.environ["COREG_EDGE_DATA"] = before


def _check_run_folder(out: Path, recipe_name: str) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a folder for the run")
    if out.is_dir() and not (out / STATE_FILE).exists() and any(not is_lock_file(p) for p in out.iterdir()):
        raise UserError(
            f"--out {out}: exists and is not a coreg-edge run folder (no {STATE_FILE}); choose a new or empty folder"
        )
    previous = (_read(out / STATE_FILE) or {}).get("recipe")
    if isinstance(previous, str) and previous != recipe_name:
        raise UserError(
            f"--out {out}: holds a run of recipe {previous!r}, not {recipe_name!r}; choose another --out "
            "(running here would replace that run's outputs)"
        )


def run_recipe(
    recipe: str | os.PathLike[str] | Recipe,
    out: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    quiet: bool = False,
) -> dict[str, Any]:
    """Annotate -> train (+ select) -> export every [export] format (+ parity) -> bench -> report into the
    run folder `out`.

    Stages whose outputs are complete and whose settings and inputs are unchanged are skipped, so running
    it again after an interruption continues where it stopped. `overrides` are `--set` strings
    (`train.epochs=5`). Returns the summary (also RUN/summary.json, written atomically last).
    """
    recipe = load_recipe(recipe, overrides)
    out = Path(out) if out is not None else Path("runs") / recipe.name
    with exclusive(out, "run folder"), quieted(quiet):  # before the checks: two calls must not both pass them
        return _run_locked(recipe, out, quiet)


def _run_locked(recipe: Recipe, out: Path, quiet: bool) -> dict[str, Any]:
    _check_run_folder(out, recipe.name)
    out.mkdir(parents=True, exist_ok=True)
    if _read(out / RECIPE_FILE) != recipe.to_dict():
        write_json(out / RECIPE_FILE, recipe.to_dict())

    run = _Run(recipe, out, quiet)
    stage = STAGES[0]
    try:
        with _data_dir(recipe.data.get("data_dir")):
            for stage in STAGES:
                began = time.perf_counter()
                try:
                    getattr(run, stage)()
                except (KeyboardInterrupt, Interrupted) as exc:  # the trainer's Ctrl-C (it checkpoints first)
                    run.report[stage] = {
                        "status": "interrupted",
                        "seconds": round(time.perf_counter() - began, 3),
                    }
                    hint = ", training resumes from its last finished epoch" if stage == "train" else ""
                    raise PipelineInterrupted(
                        f"interrupted during {stage}; run the same command again (same --out and --set) to "
                        f"continue: finished stages are skipped{hint}"
                    ) from exc
    except PipelineInterrupted:
        raise
    except UserError as exc:
        if stage == "export" and run.report.get("export", {}).get("status") == "failed":
            summary = build_summary(out, recipe, run.report, error=str(exc))
            write_json(out / SUMMARY_FILE, summary)
            exc.summary = summary  # type: ignore[attr-defined]
        raise
    summary = build_summary(out, recipe, run.report)
    write_json(out / SUMMARY_FILE, summary)
    unchanged = all(info["status"] == "skipped" for info in summary["stages"].values())
    summary["report"] = _write_report(out, quiet, keep=unchanged)
    write_json(out / SUMMARY_FILE, summary)
    return summary


def _write_report(out: Path, quiet: bool, keep: bool = False) -> str | None:
    """RUN/report.html (coreg-edge report), last: its pictures read summary.json and bench.json. Without the
    report extra the run still succeeds and says how to get the page. `keep`: nothing ran, so a report
    already there still describes the run."""
    if keep and (out / REPORT_FILE).is_file():
        return REPORT_FILE
    try:
        written = write_report(out, out / REPORT_FILE, quiet=quiet)
    except MissingExtraError as exc:
        info(f"report: skipped ({exc})")
        return None
    except Exception as exc:  # noqa: BLE001 - every stage succeeded: a picture must not fail the run

        info(f"report: not written ({type(exc).__name__}: {one_line(exc)}); try coreg-edge report {out}")
        return None
    info(f"report: {written}")
    return REPORT_FILE

