"""Several names per class (#12 item 3): a TOML/JSON classes file, every name prompted, votes to its class."""

from __future__ import annotations

import json

import numpy as np
import torch

from coreg_edge.annotate import annotate
from coreg_edge.annotate.clip import TextPromptVoters, load_clip
from coreg_edge.annotation_file import load


def _features(tiny_clip, count=12, seed=0):
    config, checkpoint = tiny_clip
    bundle = load_clip(str(config), str(checkpoint), "cpu")
    torch.manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(count, bundle.model.visual.output_dim), dim=-1)
    return bundle, features


def test_one_name_per_class_is_the_plain_classifier(tiny_clip):
    bundle, features = _features(tiny_clip)
    templates = ["a photo of a {}.", "a drawing of a {}."]
    plain = TextPromptVoters(bundle, templates, ["cat", "dog", "bird"]).vote(features)
    listed = TextPromptVoters(bundle, templates, [["cat"], ["dog"], ["bird"]]).vote(features)
    assert np.array_equal(plain.votes, listed.votes) and np.array_equal(plain.probs, listed.probs)


def test_each_template_votes_the_class_of_its_best_name(tiny_clip):
    bundle, features = _features(tiny_clip, count=64)
    templates = ["a photo of a {}.", "a drawing of a {}.", "a {} in the wild."]
    names = [["cat", "kitten", "tabby cat"], ["dog"], ["bird", "sparrow"]]
    several = TextPromptVoters(bundle, templates, names)
    ballot = several.vote(features)
    votes, probs = ballot.votes, ballot.probs
    flat = TextPromptVoters(bundle, templates, [n for group in names for n in group])  # each name its own class
    flat_votes = flat.vote(features).votes
    owner = np.asarray([0, 0, 0, 1, 2, 2])
    assert np.array_equal(votes, owner[flat_votes])  # the best name's class, template by template
    assert probs.shape == (64, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    # a class's logit is its best name's: recompute from the flat logits
    logits = 100.0 * features @ flat.class_features()
    logits = logits.view(64, 3, 6)
    best = torch.stack([logits[..., owner == c].amax(-1) for c in range(3)], -1)
    assert np.allclose(probs, best.softmax(-1).mean(1).numpy(), atol=1e-6)
    assert len(set(votes.ravel().tolist())) > 1  # the check means something: several classes were voted


def test_annotate_with_a_classes_file_records_every_name(tiny_clip, class_folder, tmp_path):
    config, checkpoint = tiny_clip
    table = tmp_path / "classes.toml"
    table.write_text('bird = ["bird", "sparrow"]\ncat = ["cat", "kitten"]\ndog = "dog"\n')
    out = tmp_path / "ann.npz"
    annotate(str(class_folder), out, classes=str(table), clip_model=str(config), pretrained=str(checkpoint),
             templates="imagenet", quiet=True)  # fmt: skip
    ann = load(out)
    assert ann.class_names == ["bird", "cat", "dog"]
    assert ann.extra["prompt_names"] == [["bird", "sparrow"], ["cat", "kitten"], "dog"]
    assert ann.votes.shape[1] == len(ann.voters) and int(ann.votes.max()) < 3
    worded = tmp_path / "worded.npz"
    annotate(str(class_folder), worded, classes=str(table), wording="a {} face", clip_model=str(config),
             pretrained=str(checkpoint), quiet=True)  # fmt: skip
    assert load(worded).extra["prompt_names"][0] == ["a bird face", "a sparrow face"]


def test_a_classes_table_through_the_cli(runner, cli, tiny_clip, class_folder, tmp_path):
    config, checkpoint = tiny_clip
    table = tmp_path / "classes.json"
    table.write_text(json.dumps({"bird": ["bird", "sparrow"], "cat": "cat", "dog": ["dog", "puppy"]}))
    out = tmp_path / "ann.npz"
    args = ["annotate", str(class_folder), "--classes", str(table), "--clip-model", str(config),
            "--pretrained", str(checkpoint), "--out", str(out), "--json"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_classes"] == 3
    assert load(out).extra["prompt_names"] == [["bird", "sparrow"], "cat", ["dog", "puppy"]]
    bad = tmp_path / "bad.json"
    bad.write_text('{"bird": [], "cat": "cat"}')
    args[3], args[-2] = str(bad), str(tmp_path / "bad.npz")
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and result.stderr.strip().startswith("Error: --classes") and "Traceback" not in result.output
