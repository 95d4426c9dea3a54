"""The review loop (#12 item 6): a stratified sample to check, a page that shows it, then `train --val`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from cli_errors import one_line_error

from coreg_edge.training import run_folder as rf

TINY = ["--backbone", "test_resnet", "--image-size", "8", "-q"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short Co-Reg run on digits (written once for this module; read only)."""
    from click.testing import CliRunner

    from coreg_edge.annotate import annotate
    from coreg_edge.cli import cli

    folder = tmp_path_factory.mktemp("review")
    ann = folder / "digits.npz"
    annotate("digits", ann, annotator="synthetic", partial_rate=0.3, noise_rate=0.2, quiet=True)
    run = folder / "run"
    args = ["train", str(ann), "--out", str(run), "--epochs", "3", "--warmup", "1", "--set", "queue_size=128", *TINY]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return ann, run


def test_the_sample_is_stratified_least_confident_first(runner, cli, digits_run, tmp_path):
    ann, run = digits_run
    out = tmp_path / "review"
    result = runner.invoke(cli, ["review", str(run), "--sample", "30", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    manifest = json.loads((out / "review.json").read_text())
    items = manifest["items"]
    predicted = [c for c, n in summary["per_class"].items() if n]
    assert summary["items"] == len(items) == 30  # round-robin over the predicted classes until the sample is full
    counts = sorted(summary["per_class"][c] for c in predicted)
    assert counts[-1] - counts[0] <= 1 or counts[0] < 30 // len(predicted)  # even, unless a class ran out
    for name in manifest["class_names"]:
        mine = [e for e in items if e["label"] == name]
        assert [e["confidence"] for e in mine] == sorted(e["confidence"] for e in mine)  # least confident first
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(e["file"].split("/")[1] for e in mine)
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(items)  # self-contained: every thumbnail inside
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere


def test_the_page_shows_every_thumbnail_in_headless_chromium(runner, cli, digits_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (bash .ci/run installs Debian's chromium package)")
    _, run = digits_run
    out = tmp_path / "review"
    assert runner.invoke(cli, ["review", str(run), "--sample", "20", "--out", str(out)]).exit_code == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=5000"]
    url = (out / "index.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-loaded="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    count = len(json.loads((out / "review.json").read_text())["items"])
    assert loaded and total, dom[:500]
    assert int(loaded.group(1)) == int(total.group(1)) == count > 0
    shot = tmp_path / "review.png"  # kept with the test's files, to look at
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,900", url],
                   capture_output=True, timeout=120)  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 1000


def test_a_corrected_review_selects_by_accuracy(runner, cli, digits_run, tmp_path):
    ann, run = digits_run
    out = tmp_path / "review"
    assert runner.invoke(cli, ["review", str(run), "--sample", "40", "--out", str(out)]).exit_code == 0
    manifest = json.loads((out / "review.json").read_text())
    truth = {e["item"]: e for e in manifest["items"]}
    from coreg_edge.annotation_file import load

    labels = dict(zip(load(ann).item_ids, load(ann).labels, strict=True))
    names = manifest["class_names"]
    moved = 0
    for item, entry in truth.items():  # the person's corrections: every wrong image into its true folder
        right = names[labels[item]]
        if right != entry["label"]:
            (out / right).mkdir(exist_ok=True)
            (out / entry["file"]).rename(out / right / entry["file"].split("/")[1])
            moved += 1
    checked = tmp_path / "checked"
    args = ["train", str(ann), "--val", str(out), "--out", str(checked), "--epochs", "3", "--warmup", "1",
            "--set", "queue_size=128", *TINY]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    selection = json.loads((checked / rf.SELECTION).read_text())
    assert "val" in json.dumps(selection).lower()
    val = {p: selection["scores"][p]["val_accuracy"] for p in ("a", "b")}
    assert val[selection["selected"]] == max(val.values())  # chosen by accuracy on the corrected sample
    assert moved >= 0  # (the short run may already be right on all of them)


def test_review_refuses_what_is_not_a_run_and_an_earlier_output(runner, cli, digits_run, tmp_path):
    ann, run = digits_run
    result = runner.invoke(cli, ["review", str(ann), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "not a run folder" in result.stderr
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    result = runner.invoke(cli, ["review", str(run), "--out", str(keep)])
    assert result.exit_code == 1 and "exists and is not empty" in result.stderr and (keep / "mine.txt").exists()


def test_stratified_sample_by_hand():
    import numpy as np

    from coreg_edge.labels import LabelTable
    from coreg_edge.review import stratified_sample

    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    confidence = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.8, 0.2])
    table = LabelTable([str(i) for i in range(7)], labels, confidence, ["a", "b", "c"], None, "hand", np.arange(7))
    assert stratified_sample(table, 3) == [1, 4, 6]  # one per class, each its least confident
    assert stratified_sample(table, 5) == [1, 3, 4, 6, 5]  # class b ran out: a and c give more
    assert stratified_sample(table, 100) == [1, 3, 2, 0, 4, 6, 5]  # everything, grouped by class


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A 1-epoch run on an image folder whose items `x/a/b.png` and `x/a__b.png` were one file name under the
    old '/' -> '__' naming (written once for this module; read only)."""
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from coreg_edge.annotate import annotate
    from coreg_edge.cli import cli

    folder = tmp_path_factory.mktemp("review_folder")
    data = folder / "data"
    names = ["x/a/b.png", "x/a__b.png", "x/c.png", "x/e.png", "y/a/b.png", "y/a__b.png", "y/d.png", "y/f.png"]
    for i, rel in enumerate(names):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / rel)  # each its own bytes: an overwritten one shows
    ann = folder / "ann.npz"
    annotate(str(data), ann, annotator="simulated", preset="easy", shots=2, quiet=True)
    run = folder / "run"
    tiny = ["--method", "supervised", "--epochs", "1", "--batch-size", "4", *TINY]
    args = ["train", str(ann), "--out", str(run), *tiny]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return data, ann, run


def test_review_names_never_collide(runner, cli, folder_run, tmp_path):
    from coreg_edge.data import open_source

    data, _, run = folder_run
    out = tmp_path / "review"
    result = runner.invoke(cli, ["review", str(run), "--sample", "100", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    items = json.loads((out / "review.json").read_text())["items"]
    assert len(items) == 8 == sum(1 for _ in out.rglob("*.png"))  # was fewer files than items: overwritten
    for entry in items:
        assert (out / entry["file"]).read_bytes() == (data / entry["item"]).read_bytes()
    source = open_source(str(out))  # as `train --val` reads it: every item, under its predicted class
    assert len(source) == 8
    assert sorted(source.item_ids) == sorted(entry["file"] for entry in items)


def test_review_out_dot_in_an_empty_current_folder(runner, cli, folder_run, tmp_path, monkeypatch):
    _, _, run = folder_run
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = runner.invoke(cli, ["review", str(run), "--out", "."])
    assert result.exit_code == 0, result.stderr  # was: "unexpected ValueError: ... has an empty name"
    assert (here / "index.html").exists() and (here / "review.json").exists()


def test_review_out_inside_the_images_is_refused(runner, cli, folder_run):
    data, _, run = folder_run
    result = runner.invoke(cli, ["review", str(run), "--out", str(data / "review")])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "inside the image folder" in result.stderr and not (data / "review").exists()


def test_review_says_its_accuracy_is_a_biased_check_not_a_held_out_estimate(
    runner, cli, folder_run, tmp_path
):
    _, _, run = folder_run
    help_text = " ".join(runner.invoke(cli, ["review", "--help"]).output.split())
    assert "honest" not in help_text and "not an unbiased held-out estimate" in help_text
    assert "drawn from the training items" in help_text
    out = tmp_path / "review"
    assert runner.invoke(cli, ["review", str(run), "--out", str(out)]).exit_code == 0
    page = " ".join((out / "index.html").read_text().split())
    assert "training items" in page and "not an unbiased held-out estimate" in page


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["review", "run", "--out", "r", "--thumbnail", "100000"], "--thumbnail must be a whole number within [16, 1024]"),
    ],
)  # fmt: skip
def test_huge_values_are_one_line_before_any_work(runner, cli, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(cli, args), 2, fragment)
