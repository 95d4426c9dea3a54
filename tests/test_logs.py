"""coreg_edge/logs.py: one logger for every stage's progress lines; quiet is its level (-q for the process's
command, quiet=True for one Python call); torchrun followers say nothing below a warning."""

from __future__ import annotations

import logging
import warnings

import pytest

from coreg_edge import logs
from coreg_edge.utils import progress


def test_a_line_goes_to_stderr_never_stdout(capsys):
    logs.info("training 10 items")
    captured = capsys.readouterr()
    assert captured.err == "training 10 items\n" and captured.out == ""


def test_quieted_hides_the_lines_for_one_call_and_restores_the_level(capsys):
    with logs.quieted():
        logs.info("hidden")
        logs.LOGGER.warning("a warning still shows")
    logs.info("shown again")
    assert capsys.readouterr().err == "a warning still shows\nshown again\n"
    with logs.quieted(False):
        logs.info("not quiet")
    assert capsys.readouterr().err == "not quiet\n"
    assert logs.LOGGER.level == logging.INFO


def test_set_quiet_is_the_whole_processs_level(capsys):
    try:
        logs.set_quiet(True)
        logs.info("hidden")
        assert capsys.readouterr().err == ""
    finally:
        logs.set_quiet(False)
    logs.info("shown")
    assert capsys.readouterr().err == "shown\n"


@pytest.mark.parametrize(("rank", "shown"), [("0", True), ("1", False)])
def test_only_rank_0_of_torchrun_speaks(monkeypatch, capsys, rank, shown):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    logs.info("epoch 1/3")
    logs.LOGGER.warning("every rank warns")
    assert capsys.readouterr().err == ("epoch 1/3\n" if shown else "") + "every rank warns\n"


def test_progress_bars_follow_the_logger(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not progress(range(3), desc="x").disable
    with logs.quieted():
        assert progress(range(3), desc="x").disable
    assert progress(range(3), desc="x", quiet=True).disable  # one bar's own opt-out
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert progress(range(3), desc="x").disable


def test_one_handler_however_often_it_is_installed():
    logs._install()
    ours = [h for h in logs.LOGGER.handlers if isinstance(h, logs._StderrHandler)]
    assert len(ours) == 1 and not logs.LOGGER.propagate


def test_the_cli_quiet_flag_silences_the_lines_not_the_warnings_nor_the_result(runner, cli, tmp_path):
    """`info DATA -q`-style check on a real command: train's progress lines go, its JSON stays."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loud = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--out", str(tmp_path / "a.npz")])
        quiet = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--out", str(tmp_path / "b.npz"),
                                    "-q"])  # fmt: skip
    assert loud.exit_code == 0 and quiet.exit_code == 0, (loud.output, quiet.output)
    assert loud.stderr.strip() and not quiet.stderr.strip()
    assert logs.LOGGER.level == logging.INFO  # the command's -q ended with it
