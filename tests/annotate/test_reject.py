"""`annotate --reject P` (#12 item 4, first part): items of none of the classes leave the annotation."""

from __future__ import annotations

import json

import numpy as np

from coreg_edge.annotate import annotate
from coreg_edge.annotation_file import Annotation, load


def test_items_below_the_threshold_are_listed_not_annotated(tmp_path):
    full = annotate("digits", annotator="simulated", preset="hard", seed=1, quiet=True)
    out = tmp_path / "rej.npz"
    kept = annotate("digits", out, annotator="simulated", preset="hard", seed=1, reject=0.5, quiet=True)
    score = dict(zip(full.item_ids, full.zero_shot_probs.max(1), strict=True))
    assert kept.num_items + len(kept.rejected) == full.num_items and 0 < len(kept.rejected) < full.num_items
    assert all(score[item] >= 0.5 for item in kept.item_ids)
    assert all(r["score"] < 0.5 and abs(r["score"] - score[r["item"]]) < 1e-6 for r in kept.rejected)
    rows = {item: i for i, item in enumerate(full.item_ids)}
    same = [rows[item] for item in kept.item_ids]
    assert np.array_equal(kept.candidates, full.candidates[same])  # the others are annotated as before
    again = load(out)
    assert again.rejected == kept.rejected and again.stats()["rejected_items"] == len(kept.rejected)


def test_training_leaves_rejected_items_out(runner, cli, tmp_path):
    ann = tmp_path / "rej.npz"
    kept = annotate("digits", ann, annotator="simulated", preset="hard", reject=0.6, quiet=True)
    run = tmp_path / "run"
    args = ["train", str(ann), "--out", str(run), "--method", "supervised", "--epochs", "1",
            "--backbone", "test_resnet", "--image-size", "8", "--holdout", "0.1", "--json", "-q"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["holdout_items"] == round(0.1 * kept.num_items)


def test_reject_from_the_cli_warnings_and_ranges(runner, cli, tmp_path):
    out = tmp_path / "s.npz"
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--reject", "0.5", "--out", str(out)])
    assert result.exit_code == 0 and "the synthetic annotator ignores --reject" in result.stderr
    assert load(out).rejected == []  # no zero-shot probabilities: nothing to reject on
    bad = runner.invoke(cli, ["annotate", "digits", "--annotator", "simulated", "--reject", "1.5", "--out", str(out)])
    assert bad.exit_code == 2 and bad.stderr.strip() == "Error: --reject must be a number within [0, 1) (got 1.5)"
    one = runner.invoke(cli, ["annotate", "digits", "--annotator", "simulated", "--reject", "1", "--out", str(out)])
    assert one.exit_code == 2 and "[0, 1)" in one.stderr  # a probability is never above 1: refused up front
    everything = runner.invoke(cli, ["annotate", "digits", "--annotator", "simulated", "--reject", "0.99999",
                                     "--out", str(tmp_path / "none.npz")])  # fmt: skip
    assert everything.exit_code == 1 and "every item was rejected" in everything.stderr, everything.stderr


def test_files_without_rejections_load_as_before(tmp_path, digits_annotation):
    ann = load(digits_annotation)
    assert ann.rejected == [] and "rejected" not in ann.extra
    path = tmp_path / "old.npz"  # a file written before --reject: its meta has no "rejected" key
    meta = ann.meta()
    meta.pop("rejected")
    np.savez_compressed(path, candidates=ann.candidates, votes=ann.votes, zero_shot_probs=ann.zero_shot_probs,
                        labels=ann.labels, item_ids=np.asarray(ann.item_ids), meta=np.asarray(json.dumps(meta)))  # fmt: skip
    assert load(path).rejected == [] and isinstance(load(path), Annotation)
