"""The voter interface (#12 item 1): embedder + voter groups, each with class_features() and vote(), and
the annotation file's `voters` (format version 2, version 1 files still read)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreg_edge.annotate import annotate, registry
from coreg_edge.annotate.job import AnnotateJob
from coreg_edge.annotate.voters import Ballot, Embedder, Panel, Voters
from coreg_edge.annotation_file import FORMAT_VERSION, AnnotationFormatError, load


class Brightness(Embedder):
    """One feature per image: its mean grey level in [0, 1]."""

    def preprocess(self, image):
        return np.asarray(image.convert("L"), dtype=np.float32).mean().reshape(1) / 255.0

    def encode(self, batch):
        return batch


class BrightnessVoters(Voters):
    """One voter per threshold: class 1 when brighter than it (a hand-checkable voter group)."""

    def __init__(self, thresholds, in_mode=True, scores=True):
        self.names = [f"brighter-than-{t}" for t in thresholds]
        self.thresholds, self.in_mode, self.scores = np.asarray(thresholds), in_mode, scores
        self.defined = 0

    def class_features(self):
        self.defined += 1
        return self.thresholds

    def vote(self, features):
        votes = (features[:, :1] > self.class_features()[None, :]).astype(np.int16)
        share = votes.mean(1, dtype=np.float32)
        return Ballot(votes, np.stack([1 - share, share], 1) if self.scores else None)


@pytest.fixture
def brightness(monkeypatch):
    """A registered voting annotator over two classes (dark, bright): the interface a new annotator uses."""
    monkeypatch.setattr(registry, "_ANNOTATORS", dict(registry._ANNOTATORS))  # undone after the test
    made: list[Panel] = []

    def panel(job: AnnotateJob) -> Panel:
        made.append(Panel(Brightness(), [BrightnessVoters([0.3, 0.5]), BrightnessVoters([0.7], in_mode=False, scores=False)],
                          mode=job.settings.mode, k=1, identity={"model": "brightness"}))  # fmt: skip
        return made[-1]

    registry.register_annotator(registry.Annotator("brightness", "mean grey level", panel=panel, options=("mode", "k")))
    return made


def _grey_folder(root, levels):
    from PIL import Image

    root.mkdir()
    for i, level in enumerate(levels):
        Image.new("L", (8, 8), int(level * 255)).save(root / f"{i}.png")
    return root


def test_a_registered_voting_annotator_votes_every_item_once(brightness, tmp_path):
    folder = _grey_folder(tmp_path / "grey", [0.1, 0.4, 0.6, 0.9])
    ann = annotate(str(folder), annotator="brightness", classes="dark,bright", quiet=True)
    assert ann.voters == ["brighter-than-0.3", "brighter-than-0.5", "brighter-than-0.7"]
    assert ann.votes.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert ann.candidates.tolist() == [[True, False], [True, True], [True, True], [False, True]]  # union-top1
    # the probabilities are the first group's (the second has none): the share of its voters saying bright
    assert np.allclose(ann.zero_shot_probs[:, 1], [0.0, 0.5, 1.0, 1.0])
    assert all(group.defined >= 1 for group in brightness[0].groups)


def test_the_mode_reads_in_mode_groups_and_the_others_always_join(brightness, tmp_path):
    folder = _grey_folder(tmp_path / "grey", [0.1, 0.6, 0.9])
    ann = annotate(str(folder), annotator="brightness", classes="dark,bright", mode="topk", k=1, quiet=True)
    # topk 1 over the first group's probabilities, plus the 0.7 voter's vote (dark for 0.6: it joins)
    assert ann.candidates.tolist() == [[True, False], [True, True], [False, True]]
    assert ann.votes[1].tolist() == [1, 1, 0]
    assert ann.annotator["model"] == "brightness" and ann.annotator["kind"] == "brightness"


def test_an_annotator_row_is_voters_or_a_protocol_never_both():
    with pytest.raises(ValueError, match="exactly one of panel"):
        registry.Annotator("neither", "no way to label")
    with pytest.raises(ValueError, match="exactly one of panel"):
        registry.Annotator("both", "two ways", panel=lambda job: None, protocol=lambda job: None)


def _rewrite_meta(path, out, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    meta = json.loads(str(arrays["meta"]))
    change(meta)
    arrays["meta"] = np.asarray(json.dumps(meta))
    with open(out, "wb") as fh:
        np.savez(fh, **arrays)
    return out


def test_version_1_files_are_read_and_saved_as_version_2(tmp_path, runner, cli):
    current = tmp_path / "v2.npz"
    annotate("digits", annotator="simulated", preset="hard", sim_templates=3, quiet=True, out=current)
    meta = json.loads(str(np.load(current)["meta"]))
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["voters"] == ["simulated-0", "simulated-1", "simulated-2"]
    assert "templates" not in meta and meta["stats"]["num_voters"] == 3

    def as_v1(meta):
        meta["format_version"] = 1
        meta["templates"] = meta.pop("voters")
        meta["stats"]["num_templates"] = meta["stats"].pop("num_voters")

    old = _rewrite_meta(current, tmp_path / "v1.npz", as_v1)
    ann = load(old)
    assert ann.voters == ["simulated-0", "simulated-1", "simulated-2"] and ann.read_version == 1
    assert "templates" not in ann.extra  # the old key is read as voters, not carried as an unknown one
    info = runner.invoke(cli, ["info", str(old), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["format_version"] == 1
    again = ann.save(tmp_path / "again.npz")
    assert json.loads(str(np.load(again)["meta"]))["format_version"] == 2 and load(again).voters == ann.voters
    trained = runner.invoke(cli, ["train", str(old), "--out", str(tmp_path / "run"), "--method", "proden", "--epochs", "1", "-q"])
    assert trained.exit_code == 0, trained.output  # a version 1 file trains as it did


def test_a_version_1_file_needs_templates_and_a_version_3_one_is_refused(tmp_path):
    current = tmp_path / "v2.npz"
    annotate("digits", annotator="synthetic", quiet=True, out=current)

    def v1_with_new_key(meta):
        meta["format_version"] = 1  # but still says "voters"

    with pytest.raises(AnnotationFormatError, match="meta lacks templates"):
        load(_rewrite_meta(current, tmp_path / "bad.npz", v1_with_new_key))
    with pytest.raises(AnnotationFormatError, match="format_version 3 is not supported .*reads 1 and 2"):
        load(_rewrite_meta(current, tmp_path / "v3.npz", lambda meta: meta.update(format_version=3)))
