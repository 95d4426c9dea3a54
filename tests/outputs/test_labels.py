"""`coreg-edge labels`: pseudo-labels out, as CSV, JSON Lines or an ImageFolder; the user's files never move."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from cli_errors import one_line_error
from PIL import Image

from coreg_edge.annotate import annotate
from coreg_edge.annotation_file import load
from coreg_edge.labels import flat_name
from coreg_edge.training import run_folder as rf


def _csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_an_annotation_with_zero_shot_probs_gives_its_argmax_and_probability(runner, cli, tmp_path):
    ann_path = tmp_path / "sim.npz"
    annotate("digits", ann_path, annotator="simulated", preset="hard", quiet=True)
    ann = load(ann_path)
    out = tmp_path / "labels"
    result = runner.invoke(cli, ["labels", str(ann_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["items"] == summary["labelled"] == ann.num_items and summary["unlabelled"] == 0
    rows = _csv(out / "labels.csv")
    assert [r["item"] for r in rows] == ann.item_ids
    assert [r["label"] for r in rows] == [ann.class_names[c] for c in ann.zero_shot_probs.argmax(1)]
    assert np.allclose([float(r["confidence"]) for r in rows], ann.zero_shot_probs.max(1), atol=1e-6)
    assert sum(summary["per_class"].values()) == ann.num_items


def test_a_synthetic_annotation_labels_only_its_single_candidate_sets(runner, cli, digits_annotation, tmp_path):
    ann = load(digits_annotation)
    out = tmp_path / "labels"
    assert runner.invoke(cli, ["labels", str(digits_annotation), "--format", "jsonl", "--out", str(out)]).exit_code == 0
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    single = ann.candidates.sum(1) == 1
    assert [r["label"] is not None for r in rows] == list(single)
    for row, cands in zip(rows, ann.candidates, strict=True):
        if row["label"] is not None:
            assert ann.class_names.index(row["label"]) == int(cands.argmax()) and row["confidence"] == 1.0


def test_a_run_labels_with_its_selected_peer(runner, cli, digits_annotation, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(digits_annotation), "--out", str(run), "--method", "supervised", "--epochs", "2",
            "--backbone", "test_resnet", "--image-size", "8", "-q"]  # fmt: skip
    assert runner.invoke(cli, args).exit_code == 0
    out = tmp_path / "labels"
    result = runner.invoke(cli, ["labels", str(run), "--format", "jsonl", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labelled_by"] == "the run's peer a"
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    # the same predictions computed independently: the network on (x / 255 - mean) / std
    from coreg_edge.data import open_source
    from coreg_edge.training.image_store import decode_to_memory

    ann = load(digits_annotation)
    pre = rf.preprocess_config(run)
    images = decode_to_memory(open_source("digits"), open_source("digits").indices_of(ann.item_ids), pre, quiet=True)
    mean = torch.tensor(pre.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(pre.std).reshape(1, -1, 1, 1)
    with torch.no_grad():
        probs = rf.load_network(run, "a")((images.float() / 255 - mean) / std).softmax(1)
    assert [r["label"] for r in rows] == [ann.class_names[c] for c in probs.argmax(1)]
    assert np.allclose([r["confidence"] for r in rows], probs.max(1).values.numpy(), atol=1e-5)
    accuracy = np.mean([r["label"] == ann.class_names[t] for r, t in zip(rows, ann.labels, strict=True)])
    assert accuracy > 0.5  # trained on the true labels for 2 epochs: far above chance (0.1)


def test_an_imagefolder_links_the_originals_and_copy_copies_them(runner, cli, tmp_path, class_folder):
    ann_path = tmp_path / "ann.npz"
    annotate(str(class_folder), ann_path, annotator="simulated", preset="easy", shots=2, quiet=True)
    before = {p: p.read_bytes() for p in class_folder.rglob("*") if p.is_file()}
    linked, copied = tmp_path / "linked", tmp_path / "copied"
    assert runner.invoke(cli, ["labels", str(ann_path), "--format", "imagefolder", "--out", str(linked)]).exit_code == 0
    args = ["labels", str(ann_path), "--format", "imagefolder", "--copy", "--out", str(copied)]
    assert runner.invoke(cli, args).exit_code == 0
    assert sorted(p.name for p in linked.iterdir() if p.is_dir()) == ["bird", "cat", "dog"]
    files = [p for p in linked.rglob("*") if p.is_file() or p.is_symlink()]
    links = [p for p in files if p.is_symlink()]
    assert len(links) == sum(1 for _ in class_folder.rglob("*.png")) + sum(1 for _ in class_folder.rglob("*.jpg"))
    for link in links:
        assert link.resolve() in {p.resolve() for p in before}
        twin = copied / link.parent.name / link.name
        assert not twin.is_symlink() and twin.read_bytes() == link.read_bytes()
    assert {p: p.read_bytes() for p in class_folder.rglob("*") if p.is_file()} == before  # nothing moved
    rows = _csv(linked / "labels.csv")
    for row in rows:
        assert (linked / row["label"] / flat_name(row["item"])).is_symlink()


def test_min_confidence_leaves_items_unlabelled(tmp_path):
    from coreg_edge.labels import export_labels

    ann_path = tmp_path / "sim.npz"
    annotate("digits", ann_path, annotator="simulated", preset="hard", quiet=True)
    probs = load(ann_path).zero_shot_probs.max(1)
    summary = export_labels(ann_path, tmp_path / "out", min_confidence=0.5, quiet=True)
    assert summary["labelled"] == int((probs >= 0.5).sum()) and 0 < summary["labelled"] < len(probs)
    rows = _csv(tmp_path / "out" / "labels.csv")
    assert all(row["label"] == "" or float(row["confidence"]) >= 0.5 for row in rows)


@pytest.mark.parametrize("existing", ["file", "folder"])
def test_an_earlier_output_is_never_replaced(runner, cli, digits_annotation, tmp_path, existing):
    out = tmp_path / "out"
    if existing == "file":
        out.write_text("keep me")
    else:
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    result = runner.invoke(cli, ["labels", str(digits_annotation), "--out", str(out)])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert ("is a file" if existing == "file" else "exists and is not empty") in result.stderr
    assert (out.read_text() if existing == "file" else (out / "mine.txt").read_text()) == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_inputs_are_one_line(runner, cli, tmp_path):
    for args, fragment in [
        (["labels", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")], "neither an annotation file"),
        (["labels", str(tmp_path), "--out", str(tmp_path / "o2"), "--format", "parquet"], "parquet"),
        (["labels", str(tmp_path), "--out", str(tmp_path / "o3"), "--min-confidence", "2"], "--min-confidence"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code != 0 and fragment in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
    assert not os.path.exists(tmp_path / "o")


def _colliding_folder(root):
    """Two classes; `x/a/b.png` and `x/a__b.png` (and `x/a%2Fb.png`) were one file name under '/' -> '__'."""
    from PIL import Image

    for i, rel in enumerate(["x/a/b.png", "x/a__b.png", "x/a%2Fb.png", "x/c.png", "y/a/b.png", "y/d.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / rel)  # each its own bytes: an overwritten one shows
    return root


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_imagefolder_names_never_collide(runner, cli, tmp_path, mode):
    data = _colliding_folder(tmp_path / "data")
    ann = tmp_path / "ann.npz"
    # every item labelled with its own class: the colliding pair shares a class folder
    annotate(str(data), ann, annotator="synthetic", partial_rate=0.0, noise_rate=0.0, quiet=True)
    out = tmp_path / "out"
    copy = ["--copy"] if mode == "copy" else []
    result = runner.invoke(cli, ["labels", str(ann), "--format", "imagefolder", "--out", str(out), *copy])
    # link mode was: "cannot write the labels folder ([Errno 17] File exists: .../.out.PID.tmp/x/x__a__b.png)"
    assert result.exit_code == 0, result.stderr
    rows = _csv(out / "labels.csv")
    assert len(rows) == 6 and all(row["label"] for row in rows)
    for row in rows:  # every item its own file, holding its own image
        placed = out / row["label"] / flat_name(row["item"])
        assert placed.read_bytes() == (data / row["item"]).read_bytes()
        assert placed.is_symlink() == (mode == "link")
    assert sum(1 for p in out.rglob("*.png")) == 6  # was 5 with --copy: one image silently overwritten
    from coreg_edge.data import open_source

    assert len(open_source(str(out))) == 6  # and read back as 6 labelled items


def test_flat_name_is_injective_and_reads_back():
    from urllib.parse import unquote

    items = ["x/a/b.png", "x/a__b.png", "x/a%2Fb.png", "x/a%252Fb.png", "x:a/b.png", "x%3Aa/b.png", "a_b.png"]
    names = [flat_name(item) for item in items]
    assert len(set(names)) == len(items) and not any("/" in name or ":" in name for name in names)
    assert [unquote(name) for name in names] == items


def test_out_dot_writes_into_the_empty_current_folder(runner, cli, digits_annotation, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = runner.invoke(cli, ["labels", str(digits_annotation), "--out", "."])
    # was: "unexpected ValueError: PosixPath('.') has an empty name"
    assert result.exit_code == 0, result.stderr
    assert (here / "labels.csv").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("where", ["inside a class folder", "a new class folder"])
def test_out_inside_the_image_folder_is_refused(runner, cli, tmp_path, class_folder, where):
    ann = tmp_path / "ann.npz"
    annotate(str(class_folder), ann, annotator="synthetic", quiet=True)
    out = class_folder / "cat" / "labels" if where == "inside a class folder" else class_folder / "new"
    result = runner.invoke(cli, ["labels", str(ann), "--format", "imagefolder", "--out", str(out)])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "inside the image folder" in result.stderr and not out.exists()


def test_contradicting_options_are_warned_about(runner, cli, digits_annotation, tmp_path):
    options = ["--peer", "a", "--copy", "--format", "jsonl"]
    result = runner.invoke(cli, ["labels", str(digits_annotation), *options, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert any("--peer a" in line and "no peers" in line for line in warned), result.stderr
    assert any("--copy" in line and "imagefolder" in line for line in warned), result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["labels", "x", "--out", "o", "--format", "xml"],
    ],
)
def test_usage_errors_are_one_line(runner, cli, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "--help" in lines[0], lines


def test_classes_that_share_a_folder_name_are_refused_and_folder_names_read_back(runner, cli, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(flat / f"{i}.png")
    ann = tmp_path / "a.npz"
    labels = np.array([0, 1, 2, 0, 1, 2])
    from coreg_edge.annotation_file import Annotation
    from coreg_edge.data import open_source

    candidates = np.eye(3, dtype=bool)[labels]  # single-candidate sets: labels without an annotator

    source = open_source(str(flat))
    Annotation(candidates=candidates, labels=np.full(6, -1), item_ids=source.item_ids, class_names=["a/b", "a_b", "c:d"],
               data=source.describe()).save(ann)  # fmt: skip
    result = runner.invoke(cli, ["labels", str(ann), "--format", "imagefolder", "--out", str(tmp_path / "o")])
    one_line_error(result, 1, "classes 'a/b' and 'a_b' both become the folder 'a_b'")
    # a class whose folder name differs from its name ('c:d' -> 'c_d') is read back as that class by --val
    from coreg_edge.training.data import load_eval_set, preprocess_for

    val = tmp_path / "val"
    (val / "c_d").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(val / "c_d" / "x.png")
    split = load_eval_set(str(val), ["a/b", "c:d"], preprocess_for(source, 8, 3), __import__("torch").device("cpu"))
    assert split.labels.tolist() == [1]


def test_labels_check_where_the_images_are_in_every_format(runner, cli, tmp_path, class_folder):
    ann = tmp_path / "a.npz"
    annotate(str(class_folder), ann, annotator="simulated", shots=1, quiet=True)
    result = runner.invoke(cli, ["labels", str(ann), "--data", "digits", "--out", str(tmp_path / "o")])
    one_line_error(result, 1, "are not in")


def test_labels_of_a_run_whose_annotation_changed_are_refused(runner, cli, digits_annotation, tmp_path):
    ann = tmp_path / "d.npz"
    shutil.copy(digits_annotation, ann)
    run = tmp_path / "run"
    args = ["train", str(ann), "--out", str(run), "--method", "supervised", "--epochs", "1",
            "--backbone", "test_resnet", "--image-size", "8", "-q"]  # fmt: skip
    assert runner.invoke(cli, args).exit_code == 0
    hint = runner.invoke(cli, ["labels", str(run), "--peer", "ensemble", "--out", str(tmp_path / "o2")])
    assert hint.exit_code == 1 and "use --peer a instead" in hint.stderr and "export --peer" not in hint.stderr
    other = tmp_path / "other.npz"
    annotate("digits", other, annotator="synthetic", classes=[f"c{i}" for i in range(10)], quiet=True)
    shutil.copy(other, ann)  # the annotation file was replaced by one of other classes
    one_line_error(runner.invoke(cli, ["labels", str(run), "--out", str(tmp_path / "o")]), 1, "the annotation file changed")
    assert json.loads((run / "config.json").read_text())["method"] == "supervised"
