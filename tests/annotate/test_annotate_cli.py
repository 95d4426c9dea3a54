"""`coreg-edge annotate` through the CLI: tiny CLIP from a config file, and the synthetic annotator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_errors import assert_one_line_error, last_line, no_leftovers, one_line_error
from PIL import Image

from coreg_edge.annotate.modes import ratio, topk
from coreg_edge.annotate.templates import DEFAULT_TEMPLATES
from coreg_edge.annotation_file import load


def _clip_args(tiny_clip):
    config, checkpoint = tiny_clip
    return ["--clip-model", str(config), "--pretrained", str(checkpoint)]


def test_tiny_clip_candidates_are_union_of_votes(runner, cli, tiny_clip, class_folder, tmp_path):
    out = tmp_path / "ann.npz"
    result = runner.invoke(
        cli, ["annotate", str(class_folder), "--out", str(out), "-q", *_clip_args(tiny_clip)]
    )
    assert result.exit_code == 0, result.output
    ann = load(out)
    assert ann.num_items == 13 and ann.num_classes == 3
    assert ann.votes.shape == (13, 27) and ann.votes.dtype == np.int16
    union = np.zeros_like(ann.candidates)
    for row, votes in enumerate(ann.votes):
        union[row, votes] = True
    assert (ann.candidates == union).all()
    assert np.allclose(ann.zero_shot_probs.sum(1), 1.0, atol=1e-5)
    assert ann.voters == list(DEFAULT_TEMPLATES)
    assert ann.class_names == ["bird", "cat", "dog"]  # sorted sub-folders
    assert ann.annotator["kind"] == "clip" and ann.annotator["mode"] == "union-top1"
    assert ann.data["source"] == "folder"
    assert sorted(set(ann.labels.tolist())) == [0, 1, 2]
    stats = ann.stats()
    assert stats["num_voters"] == 27 and 0.0 <= stats["coverage"] <= 1.0


def test_topk_and_ratio_modes_follow_stored_probabilities(runner, cli, tiny_clip, class_folder, tmp_path):
    for mode, extra, rule in [
        ("topk", ["--k", "2"], lambda p: topk(p, 2)),
        ("ratio", ["--ratio", "0.9", "--k", "3"], lambda p: ratio(p, 0.9, 3)),
    ]:
        out = tmp_path / f"{mode}.npz"
        args = [
            "annotate",
            str(class_folder),
            "--out",
            str(out),
            "-q",
            "--mode",
            mode,
            *extra,
            *_clip_args(tiny_clip),
        ]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        ann = load(out)
        assert (ann.candidates == rule(ann.zero_shot_probs)).all()
        if mode == "topk":
            assert (ann.candidates.sum(1) == 2).all()


def test_text_encoder_runs_once_per_prompt(runner, cli, tiny_clip, class_folder, tmp_path, monkeypatch):
    from open_clip.model import CLIP

    encoded = {"text_rows": 0, "image_rows": 0}
    original_text, original_image = CLIP.encode_text, CLIP.encode_image

    def count_text(self, text, *a, **kw):
        encoded["text_rows"] += len(text)
        return original_text(self, text, *a, **kw)

    def count_image(self, image, *a, **kw):
        encoded["image_rows"] += len(image)
        return original_image(self, image, *a, **kw)

    monkeypatch.setattr(CLIP, "encode_text", count_text)
    monkeypatch.setattr(CLIP, "encode_image", count_image)
    out = tmp_path / "ann.npz"
    args = [
        "annotate",
        str(class_folder),
        "--out",
        str(out),
        "-q",
        "--batch-size",
        "4",
        *_clip_args(tiny_clip),
    ]
    assert runner.invoke(cli, args).exit_code == 0
    assert encoded["text_rows"] == 27 * 3  # (templates x classes), not per image or per batch
    assert encoded["image_rows"] == 13  # each image once


def test_template_file_and_flat_folder_with_classes(runner, cli, tiny_clip, flat_folder, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("# mine\na photo of a {}\nan image of {}\n")
    out = tmp_path / "ann.npz"
    args = ["annotate", str(flat_folder), "--classes", "red,green,blue", "--templates", str(templates),
            "--out", str(out), "-q", *_clip_args(tiny_clip)]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    ann = load(out)
    assert ann.voters == ["a photo of a {}", "an image of {}"]
    assert (ann.labels == -1).all() and ann.stats()["coverage"] is None
    assert ann.votes.shape == (6, 2)


def test_synthetic_on_digits_statistics_and_reproducibility(runner, cli, tmp_path):
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path in paths:
        args = ["annotate", "digits", "--annotator", "synthetic", "--partial-rate", "0.3", "--noise-rate", "0.2",
                "--seed", "5", "--out", str(path), "-q"]  # fmt: skip
        assert runner.invoke(cli, args).exit_code == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()  # same seed, same file
    ann = load(paths[0])
    stats = ann.stats()
    assert ann.num_items == 1437 and ann.item_ids[0] == "digits:train/0"
    assert abs(stats["mean_candidates"] - 3.7) < 0.15
    assert abs(stats["coverage"] - 0.8) < 0.04
    assert stats["num_voters"] == 0 and stats["zero_shot_accuracy"] is None
    assert ann.votes.shape == (1437, 0) and ann.zero_shot_probs.shape == (1437, 0)
    assert ann.annotator["partial_rate"] == 0.3 and ann.annotator["seed"] == 5


def test_info_json_on_annotation(runner, cli, tmp_path):
    out = tmp_path / "d.npz"
    runner.invoke(cli, ["annotate", "digits:test", "--annotator", "synthetic", "--out", str(out), "-q"])
    result = runner.invoke(cli, ["info", str(out), "--json"])
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["num_items"] == 360 and summary["num_classes"] == 10
    assert summary["num_voters"] == 0 and summary["zero_shot_accuracy"] is None
    assert summary["coverage"] == pytest.approx(1.0)  # eta = 0 by default
    assert summary["mean_candidates"] > 1.0


def test_wording_changes_prompts_not_class_names(runner, cli, tiny_clip, class_folder, tmp_path):
    out = tmp_path / "worded.npz"
    args = [
        "annotate",
        str(class_folder),
        "--wording",
        "a {} animal",
        "--out",
        str(out),
        "-q",
        *_clip_args(tiny_clip),
    ]
    assert runner.invoke(cli, args).exit_code == 0
    ann = load(out)
    assert ann.class_names == ["bird", "cat", "dog"]
    assert ann.extra["prompt_names"] == ["a bird animal", "a cat animal", "a dog animal"]
    bad = runner.invoke(cli, [*args[:2], "--wording", "no slot", "--out", str(tmp_path / "x.npz"), *args[6:]])
    assert bad.exit_code == 1 and "exactly one {}" in bad.stderr


@pytest.mark.parametrize("bad", ["a {x} of {}", "{}{}", "a {0}", "a } {}", "{!r}"])
def test_a_template_with_a_stray_field_is_refused_before_the_model_loads(runner, cli, tiny_clip, class_folder,
                                                                         tmp_path, monkeypatch, bad):  # fmt: skip
    import coreg_edge.annotate.clip as clip

    monkeypatch.setattr(clip, "load_clip", lambda *a, **k: pytest.fail("the model loaded before the check"))
    templates = tmp_path / "templates.txt"
    templates.write_text(f"a photo of a {{}}\n{bad}\n")
    for option in (["--templates", str(templates)], ["--wording", bad]):
        result = runner.invoke(cli, ["annotate", str(class_folder), *option, "--out", str(tmp_path / "a.npz"),
                                     *_clip_args(tiny_clip)])  # fmt: skip
        line = result.stderr.strip().splitlines()[-1]
        assert result.exit_code == 1 and "exactly one {}" in line and "unexpected" not in line, result.stderr


def test_escaped_braces_in_a_template_or_wording_are_literal(runner, cli, tiny_clip, class_folder, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("a {{}} photo of a {}\n")
    out = tmp_path / "ann.npz"
    result = runner.invoke(cli, ["annotate", str(class_folder), "--templates", str(templates), "--wording",
                                 "{{number}} {}", "--out", str(out), "-q", *_clip_args(tiny_clip)])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert load(out).voters == ["a {{}} photo of a {}"]
    assert load(out).extra["prompt_names"][0] == "{number} bird"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["annotate", "no/such/folder"], "no such folder"),
        (["annotate", "cifar10", "--data-dir", "{tmp}/cache"], "--download"),
        (["annotate", "digits:valid", "--annotator", "synthetic"], "unknown split"),
        (["annotate", "{flat}", "--annotator", "synthetic", "--classes", "a,b"], "needs ground truth"),
        (["annotate", "{flat}", "--annotator", "synthetic"], "--classes"),
        (["annotate", "{labelled}", "--annotator", "synthetic", "--classes", "a,b"], "gives 2 classes"),
        (["annotate", "{labelled}", "--annotator", "synthetic", "--classes", "cat,dog,cow"], "bird"),
        (["annotate", "{labelled}", "--annotator", "synthetic", "--classes", "missing.txt"], "no such file"),
        (["annotate", "digits", "--annotator", "synthetic", "--classes", "a,a"], "twice"),
        (
            ["annotate", "{flat}", "--classes", "a,b", "--clip-model", "{tmp}/nope.json"],
            "no such model-config",
        ),
        (["annotate", "{flat}", "--classes", "a,b", "--clip-model", "NoSuchNet"], "unknown open_clip model"),
        (
            ["annotate", "{flat}", "--classes", "a,b", "--pretrained", "{tmp}/missing.pt"],
            "no such checkpoint",
        ),
        (["annotate", "{flat}", "--classes", "a,b", "--pretrained", "not-a-tag"], "not a known tag"),
        (["annotate", "{flat}", "--classes", "a,b", "--templates", "{tmp}/none.txt"], "not a template set"),
        (["annotate", "digits", "--annotator", "synthetic", "--partial-rate", "1.5"], "within [0, 1]"),
        (["annotate", "digits", "--annotator", "synthetic", "--workers", "-1"], "--workers must be a whole number >= 0"),
    ],
)
def test_bad_input_one_line_error(runner, cli, tmp_path, flat_folder, class_folder, args, fragment):
    out = tmp_path / "out.npz"
    subst = {"{tmp}": str(tmp_path), "{flat}": str(flat_folder), "{labelled}": str(class_folder)}
    args = [subst.get(a, a) for a in args]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "annotate":
        args += ["--out", str(out)]
    result = runner.invoke(cli, args)
    assert_one_line_error(result, fragment)
    assert not out.exists() and no_leftovers(tmp_path)


def test_no_network_no_cache_fails_fast_with_fix(runner, cli, tmp_path, flat_folder, monkeypatch):
    """The real route for a weight tag, with the network made unreachable: one line naming the fix (no
    download is tried: the reachability check answers first)."""
    import coreg_edge.annotate.clip as clip_module

    monkeypatch.setattr(clip_module, "network_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    out = tmp_path / "ann.npz"
    result = runner.invoke(cli, ["annotate", str(flat_folder), "--classes", "a,b", "--out", str(out)])
    assert_one_line_error(result, "--pretrained", "pre-download")
    assert not out.exists()


def test_corrupt_images_skipped_and_listed_or_strict_error(runner, cli, tiny_clip, class_folder, tmp_path):
    (class_folder / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    truncated = (class_folder / "dog" / "img_000.png").read_bytes()[:60]
    (class_folder / "dog" / "truncated.png").write_bytes(truncated)
    config, checkpoint = tiny_clip
    clip_args = ["--clip-model", str(config), "--pretrained", str(checkpoint)]
    out = tmp_path / "ann.npz"
    result = runner.invoke(cli, ["annotate", str(class_folder), "--out", str(out), "-q", *clip_args])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("Warning: skipping unreadable image") == 2
    ann = load(out)
    assert ann.num_items == 13
    assert sorted(s["item"] for s in ann.skipped) == ["cat/broken.jpg", "dog/truncated.png"]
    strict_out = tmp_path / "strict.npz"
    result = runner.invoke(cli, ["annotate", str(class_folder), "--out", str(strict_out), "--strict", *clip_args])
    assert_one_line_error(result, "unreadable image", "--strict")
    assert not strict_out.exists()
    # the synthetic annotator also checks folder images, so training never meets a broken file
    syn = tmp_path / "syn.npz"
    result = runner.invoke(cli, ["annotate", str(class_folder), "--annotator", "synthetic", "--out", str(syn), "-q"])
    assert result.exit_code == 0 and len(load(syn).skipped) == 2


def test_a_checkpoint_that_is_not_clip_weights_is_named(runner, cli, tiny_clip, flat_folder, tmp_path):
    config, checkpoint = tiny_clip
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    out = tmp_path / "ann.npz"
    cases = [
        (["--clip-model", str(config), "--pretrained", str(text)], "not a PyTorch checkpoint"),
        (["--clip-model", "RN50", "--pretrained", str(checkpoint)], "do not fit --clip-model RN50"),
    ]
    for clip_args, fragment in cases:
        args = ["annotate", str(flat_folder), "--classes", "a,b", "--out", str(out), *clip_args]
        result = runner.invoke(cli, args)
        assert_one_line_error(result, fragment)
        assert "unexpected" not in result.stderr and not out.exists()


def test_pretrained_that_is_text_or_another_architecture(runner, cli, tiny_clip, class_folder, tmp_path):
    import torch

    config, _ = tiny_clip
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    args = ["annotate", str(class_folder), "--clip-model", str(config), "-q"]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "a.npz"), "--pretrained", str(text)])
    assert result.exit_code == 1 and "not a PyTorch checkpoint of open_clip weights" in last_line(result)
    assert "IndexError" not in result.output
    other = tmp_path / "other.pt"
    torch.save({f"encoder.block{i}.weight": torch.zeros(2) for i in range(400)}, other)
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "b.npz"), "--pretrained", str(other)])
    line = last_line(result)
    assert result.exit_code == 1 and "do not fit --clip-model" in line and "missing keys, e.g." in line
    assert "400 unexpected keys" in line and len(line) < 600


def test_an_image_above_the_pixel_limit_is_skipped_and_named(runner, cli, class_folder, tmp_path):
    big = class_folder / "cat" / "huge.png"
    Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(big)  # 3600 pixels; the others are 40 x 30
    args = ["annotate", str(class_folder), "--annotator", "synthetic", "--max-image-pixels", "2000"]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "a.npz")])
    assert result.exit_code == 0, result.output
    assert "huge.png" in result.stderr and "pixel limit" in result.stderr
    from coreg_edge.annotation_file import load

    skipped = load(tmp_path / "a.npz").skipped
    assert len(skipped) == 1 and "huge.png" in str(skipped[0])
    assert load(tmp_path / "a.npz").data["max_image_pixels"] == 2000  # training decodes under it too
    from PIL import Image as PILImage

    assert PILImage.MAX_IMAGE_PIXELS != 2000  # the call's limit, restored afterwards
    strict = runner.invoke(cli, [*args, "--strict", "--out", str(tmp_path / "b.npz")])
    assert strict.exit_code == 1 and "huge.png" in last_line(strict) and "--max-image-pixels" in last_line(strict)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["annotate", "digits", "--annotator", "simulated", "--feature-size", "100000", "--out", "x.npz"],
         "--feature-size must be a whole number within [1, 256]"),
        (["annotate", "digits", "--annotator", "simulated", "--feature-size", "99999999999999999999", "--out", "x.npz"],
         "--feature-size must be"),
    ],
)  # fmt: skip
def test_huge_values_are_one_line_before_any_work(runner, cli, args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(cli, args), 2, fragment)


def test_other_annotators_options_are_named_in_a_warning(runner, cli, tmp_path):
    out = tmp_path / "s.npz"
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--examples", "missing",
                                 "--templates", "none", "--out", str(out), "-q"])  # fmt: skip
    assert result.exit_code == 0 and out.exists()
    assert "Warning: the synthetic annotator ignores --examples, --templates" in result.stderr
