"""`coreg-edge report` on small hand-made folders (no training): where it writes, what it says it skipped,
what it claims. The full page of a real pipeline run is checked in tests/pipeline/test_pipeline_run.py."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

METRICS_ROW = {"epoch": 0, "phase": "warmup", "loss": {"a": 1.0, "b": 1.1}, "holdout": {"a": {"hit_rate": 0.5}}}


def make_run(folder: Path, class_names: list[str] | None = None, eval_data: str | None = None) -> Path:
    """A training run folder as `train` leaves it: config.json, selection.json, two epochs of metrics."""
    folder.mkdir(parents=True)
    config = {"format_version": 1, "method": "coreg", "network": {"backbone": "test_resnet"},
              "class_names": class_names or ["a", "b"], "annotation": None, "eval_data": eval_data}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "selection.json").write_text(json.dumps({"selected": "a", "reason": "test", "test_accuracy": {}}))
    rows = [METRICS_ROW, {**METRICS_ROW, "epoch": 1}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def one_line_error(result, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in words) and "unexpected" not in lines[0], lines[0]
    return lines[0]


def test_report_probes_out_before_rendering(runner, cli, tmp_path, monkeypatch):
    """A read-only place is one line before any rendering, never "unexpected OSError" naming a temp file."""
    import tempfile

    from coreg_edge.report import page

    run = make_run(tmp_path / "run")
    rendered = []
    monkeypatch.setattr(page, "build_page", lambda *a, **k: rendered.append(1) or "<html></html>")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = runner.invoke(cli, ["report", str(run), "--out", str(tmp_path / "ro" / "r.html")])
    line = one_line_error(result, "--out", "r.html", "cannot be written there", "Read-only file system")
    assert ".tmp" not in line and not rendered and not (tmp_path / "ro").exists()  # nothing made, nothing drawn


def test_report_write_time_oserror_is_one_line(runner, cli, tmp_path, monkeypatch):
    import contextlib

    from coreg_edge.report import page

    run = make_run(tmp_path / "run")

    @contextlib.contextmanager
    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".r.html.x1y2.tmp"))
        yield  # pragma: no cover

    monkeypatch.setattr(page, "atomic_path", disk_full)
    result = runner.invoke(cli, ["report", str(run), "--out", str(tmp_path / "r.html"), "-q"])
    line = one_line_error(result, "--out", "r.html", "cannot be written there (No space left on device)")
    assert ".tmp" not in line


def test_report_names_torn_metrics_lines(runner, cli, tmp_path):
    """A bad middle line and a cut last line (a run still training) are shown, never dropped silently."""
    from coreg_edge.report.page import figure_ids

    run = make_run(tmp_path / "run")
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text.replace("\n", "\nnot json\n", 1) + '{"epoch": 2, "loss": {"a"')
    result = runner.invoke(cli, ["report", str(run), "--out", str(tmp_path / "r.html"), "-q"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1, result.stderr
    assert str(run / "metrics.jsonl") in warnings[0] and "line 2 (not JSON)" in warnings[0]
    assert "line 4 (cut short: the last line of a run still training" in warnings[0]
    page = (tmp_path / "r.html").read_text()
    assert "line 2 (not JSON)" in page and "curves" in figure_ids(page)  # the good epochs still drawn
    assert "2 epochs" in page


def test_report_does_not_claim_a_missing_deployable_model(runner, cli, tmp_path):
    pipeline = tmp_path / "pipe"
    make_run(pipeline / "train")
    (pipeline / "stages.json").write_text(json.dumps({"format_version": 1, "stages": {}}))
    (pipeline / "summary.json").write_text(json.dumps({"deployable": "export/model.int8.onnx"}))
    result = runner.invoke(cli, ["report", str(pipeline), "--out", str(tmp_path / "r.html"), "-q"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "Deployable model:" not in page and "No deployable model" in page
    assert "export/model.int8.onnx" in result.stderr  # the warning says which file is gone
    (pipeline / "export").mkdir()
    (pipeline / "export" / "model.int8.onnx").write_bytes(b"x")
    result = runner.invoke(cli, ["report", str(pipeline), "--out", str(tmp_path / "r2.html"), "-q"])
    assert "Deployable model: <b>export/model.int8.onnx</b>" in (tmp_path / "r2.html").read_text()


def _tiny_onnx(path: Path, test_accuracy: float) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Flatten", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 1, 2, 1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"coreg_edge": json.dumps({"format_version": 1, "test_accuracy": test_accuracy})})
    onnx.save(model, str(path))


def test_report_on_an_export_folder_without_parity_json(runner, cli, tmp_path):
    """Copied model files without their parity.json: the report shows what is there, parity unknown."""
    dist = tmp_path / "dist"
    dist.mkdir()
    _tiny_onnx(dist / "model.onnx", 0.875)
    _tiny_onnx(dist / "model.int8.onnx.rejected", 0.5)
    result = runner.invoke(cli, ["report", str(dist), "--out", str(tmp_path / "r.html"), "-q"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "no parity.json" in page and "model.onnx" in page and "0.8750" in page
    assert "model.int8.onnx.rejected" in page and "rejected" in page
    assert "does not say which run it came from" in page


def test_report_counts_an_imagefolder_eval_as_labelled(tmp_path, monkeypatch):
    """`labels --format imagefolder` names class `cat/dog`'s folder `cat_dog`: the report's confusion
    matrix reads it back as that class, as training's --eval does (one remap: class_positions)."""
    from coreg_edge.classes import class_folders
    from coreg_edge.report.evaluation import eval_answers
    from coreg_edge.runs import FinishedRun

    names = ["cat/dog", "bird?", "fish"]
    evaluation = tmp_path / "eval"
    for k, folder in enumerate(class_folders(names)):
        (evaluation / folder).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 40 * k, dtype=np.uint8)).save(evaluation / folder / "x.png")
    run = make_run(tmp_path / "run", names, str(evaluation))

    def probs(run, source, indices, **kwargs):
        return np.eye(len(names), dtype=np.float32)[np.zeros(len(indices), dtype=np.int64)]

    monkeypatch.setattr(FinishedRun, "probabilities", probs)
    answers, why = eval_answers(run)
    assert why is None and answers is not None
    assert sorted(answers.labels.tolist()) == [0, 1, 2]  # every image labelled, each as its own class


def test_report_rewrites_its_own_page_but_never_another_file(runner, cli, tmp_path):
    """Outputs are never replaced (README): a report replaces only a page it wrote itself."""
    run = make_run(tmp_path / "run")
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my own notes</html>")
    result = runner.invoke(cli, ["report", str(run), "--out", str(notes)])
    one_line_error(result, "--out", "exists and is not a coreg-edge report")
    assert notes.read_text() == "<html>my own notes</html>"
    page = tmp_path / "page.html"  # a page of an earlier version (no generator tag) is ours too
    page.write_text('<html><body><h1>x</h1><p class="meta">training run /r; coreg-edge 0.9.0; 2026-12-01</p>')
    for _ in range(2):  # and each run rewrites the one before
        result = runner.invoke(cli, ["report", str(run), "--out", str(page), "-q"])
        assert result.exit_code == 0, result.stderr
