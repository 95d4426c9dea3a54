"""Every bad input: one line on stderr, non-zero exit, no output file left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreg_edge.annotation_file import load


def _run(runner, cli, args):
    result = runner.invoke(cli, args)
    return result


def _assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    assert err[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err[0], err[0]


def _no_leftovers(folder):
    return [p.name for p in folder.iterdir() if p.suffix in (".npz", ".tmp")] == []


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
        (["info", "{tmp}/absent.npz"], "no such"),
    ],
)
def test_bad_input_one_line_error(runner, cli, tmp_path, flat_folder, class_folder, args, fragment):
    out = tmp_path / "out.npz"
    subst = {"{tmp}": str(tmp_path), "{flat}": str(flat_folder), "{labelled}": str(class_folder)}
    args = [subst.get(a, a) for a in args]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "annotate":
        args += ["--out", str(out)]
    result = _run(runner, cli, args)
    _assert_one_line_error(result, fragment)
    assert not out.exists() and _no_leftovers(tmp_path)


def test_no_network_no_cache_fails_fast_with_fix(runner, cli, tmp_path, flat_folder, monkeypatch):
    """The real route for a weight tag, with the network made unreachable: one line naming the fix (no
    download is tried: the reachability check answers first)."""
    import coreg_edge.annotate.clip as clip_module

    monkeypatch.setattr(clip_module, "network_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    out = tmp_path / "ann.npz"
    result = _run(runner, cli, ["annotate", str(flat_folder), "--classes", "a,b", "--out", str(out)])
    _assert_one_line_error(result, "--pretrained", "pre-download")
    assert not out.exists()


def test_corrupt_images_skipped_and_listed_or_strict_error(runner, cli, tiny_clip, class_folder, tmp_path):
    (class_folder / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    truncated = (class_folder / "dog" / "img_000.png").read_bytes()[:60]
    (class_folder / "dog" / "truncated.png").write_bytes(truncated)
    config, checkpoint = tiny_clip
    clip_args = ["--clip-model", str(config), "--pretrained", str(checkpoint)]
    out = tmp_path / "ann.npz"
    result = _run(runner, cli, ["annotate", str(class_folder), "--out", str(out), "-q", *clip_args])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("Warning: skipping unreadable image") == 2
    ann = load(out)
    assert ann.num_items == 13
    assert sorted(s["item"] for s in ann.skipped) == ["cat/broken.jpg", "dog/truncated.png"]
    strict_out = tmp_path / "strict.npz"
    result = _run(
        runner, cli, ["annotate", str(class_folder), "--out", str(strict_out), "--strict", *clip_args]
    )
    _assert_one_line_error(result, "unreadable image", "--strict")
    assert not strict_out.exists()
    # the synthetic annotator also checks folder images, so training never meets a broken file
    syn = tmp_path / "syn.npz"
    result = _run(
        runner, cli, ["annotate", str(class_folder), "--annotator", "synthetic", "--out", str(syn), "-q"]
    )
    assert result.exit_code == 0 and len(load(syn).skipped) == 2


def _write_npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _valid_arrays(n=4, c=3):
    meta = {"format_version": 1, "class_names": ["a", "b", "c"][:c], "templates": [], "annotator": {},
            "data": {}, "skipped": [], "stats": {}}  # fmt: skip
    return dict(
        candidates=np.eye(n, c, dtype=bool) | (np.arange(c) == 0),
        votes=np.zeros((n, 0), dtype=np.int16),
        zero_shot_probs=np.zeros((n, 0), dtype=np.float32),
        labels=np.zeros(n, dtype=np.int64),
        item_ids=np.asarray([f"x/{i}" for i in range(n)]),
        meta=np.asarray(json.dumps(meta)),
    )


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda a: a.pop("candidates"), "missing candidates"),
        (lambda a: a.update(meta=np.asarray("{not json")), "not valid JSON"),
        (lambda a: a.update(meta=np.asarray(json.dumps({"format_version": 1}))), "meta lacks"),
        (lambda a: a.update(candidates=np.zeros((4, 3), dtype=bool)), "empty candidate set"),
        (lambda a: a.update(labels=np.full(4, 7)), "class index below 3"),
        (lambda a: a.update(item_ids=np.asarray(["x"] * 4)), "not unique"),
        (lambda a: a.update(votes=np.zeros((4, 2), dtype=np.int16)), "meta.voters"),
        (lambda a: a.update(candidates=np.ones((4, 2), dtype=bool)), "class_names has 3"),
        (
            lambda a: a.update(
                meta=np.asarray(json.dumps({**json.loads(str(a["meta"])), "format_version": 99}))
            ),
            "format_version 99",
        ),  # fmt: skip
    ],
)
def test_malformed_annotation_files_are_named(runner, cli, tmp_path, mutate, fragment):
    arrays = _valid_arrays()
    mutate(arrays)
    path = tmp_path / "bad.npz"
    _write_npz(path, **arrays)
    result = _run(runner, cli, ["info", str(path), "--json"])
    _assert_one_line_error(result, fragment)


def test_valid_handmade_file_loads_and_garbage_file_does_not(runner, cli, tmp_path):
    good = tmp_path / "good.npz"
    _write_npz(good, **_valid_arrays())
    assert runner.invoke(cli, ["info", str(good), "--json"]).exit_code == 0
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 truncated")
    _assert_one_line_error(_run(runner, cli, ["info", str(junk)]), "not a readable")
    text = tmp_path / "notes.npz"
    text.write_text("just text")
    result = _run(runner, cli, ["info", str(text)])
    _assert_one_line_error(result, "not an .npz archive")
    assert "allow_pickle" not in result.stderr  # numpy's advice to load unsafely is not passed on


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
        result = _run(runner, cli, args)
        _assert_one_line_error(result, fragment)
        assert "unexpected" not in result.stderr and not out.exists()
