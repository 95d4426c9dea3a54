"""Annotation at scale (#14 item 2): shards merged equal the one-shot file, a killed annotation resumes and
equals the uninterrupted one, and every refusal is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreg_edge.annotation_file import load

ARRAYS = ("candidates", "votes", "zero_shot_probs", "labels")


def _clip(tiny_clip) -> list[str]:
    config, checkpoint = tiny_clip
    return ["--clip-model", str(config), "--pretrained", str(checkpoint), "--classes", "cat,dog,bird", "--batch-size", "2"]


@pytest.fixture
def folder(class_folder):
    (class_folder / "cat" / "broken.png").write_bytes(b"not an image")  # skipped, in both ways alike
    return class_folder


@pytest.fixture
def killed_at(monkeypatch):
    """killed_at(n): CLIP's image encoder raises KeyboardInterrupt (Ctrl-C) on its n-th batch, chunks every
    4 items; returns the real encoder to put back."""
    import coreg_edge.annotate.journal as journal
    from coreg_edge.annotate.clip import ClipEmbedder

    real = ClipEmbedder.encode

    def arm(n: int):
        monkeypatch.setattr(journal, "CHUNK_ITEMS", 4)  # a chunk every 2 batches of 2
        calls = []

        def dies(self, batch):
            calls.append(len(batch))
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(self, batch)

        monkeypatch.setattr(ClipEmbedder, "encode", dies)
        return real

    return arm


def _same(a, b) -> None:
    for key in ARRAYS:
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.item_ids == b.item_ids and a.voters == b.voters and a.skipped == b.skipped


def _annotate(runner, cli, args):
    result = runner.invoke(cli, ["annotate", *args, "-q"])
    assert result.exit_code == 0, result.output
    return result


def test_three_shards_merged_equal_the_one_shot_file(runner, cli, tiny_clip, folder, tmp_path):
    one = tmp_path / "one.npz"
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--out", str(one)])
    shards = []
    for k in (1, 2, 3):
        shards.append(tmp_path / f"shard-{k}.npz")
        _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--shard", f"{k}/3", "--out", str(shards[-1])])
    blocks = [load(path).extra["shard"] for path in shards]
    assert [(b["start"], b["end"]) for b in blocks] == [(0, 4), (4, 8), (8, 14)]  # 7 batches of 2, spread evenly
    merged = tmp_path / "merged.npz"
    _annotate(runner, cli, ["--merge", *map(str, reversed(shards)), "--out", str(merged)])  # any order
    _same(load(merged), load(one))
    assert "shard" not in load(merged).extra and load(merged).stats() == load(one).stats()


def test_merge_refuses_missing_duplicated_and_mismatched_shards(runner, cli, tiny_clip, folder, tmp_path):
    paths = {}
    for k in (1, 2):
        paths[k] = tmp_path / f"s{k}.npz"
        _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--shard", f"{k}/2", "--out", str(paths[k])])
    other = tmp_path / "other.npz"
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--templates", "imagenet", "--shard", "2/2", "--out", str(other)])
    plain = tmp_path / "plain.npz"
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--out", str(plain)])
    cases = [
        ([paths[1]], "missing shard 2/2"),
        ([paths[1], paths[1]], "shard 1/2 given twice"),
        ([paths[1], other], "has other voters (templates or examples) than"),
        ([paths[1], plain], "is not a shard file"),
    ]
    for shards, expected in cases:
        out = tmp_path / "m.npz"
        result = runner.invoke(cli, ["annotate", "--merge", *map(str, shards), "--out", str(out)])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and expected in lines[0], result.stderr
        assert not out.exists()


def test_a_killed_annotation_resumes_and_equals_the_uninterrupted_one(runner, cli, tiny_clip, folder, tmp_path, monkeypatch,
                                                                     killed_at):  # fmt: skip
    from coreg_edge.annotate.clip import ClipEmbedder

    whole = tmp_path / "whole.npz"
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--out", str(whole)])
    assert not (tmp_path / "whole.npz.partial").exists()  # a finished annotation leaves no journal

    real = killed_at(5)
    out = tmp_path / "ann.npz"
    killed = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--out", str(out), "-q"])
    assert killed.exit_code == 130 and not out.exists()
    chunks = sorted((tmp_path / "ann.npz.partial").glob("chunk-*.npz"))
    assert len(chunks) == 2  # batches 1-4 were kept; the fifth died
    counted = []
    monkeypatch.setattr(ClipEmbedder, "encode", lambda self, batch: counted.append(len(batch)) or real(self, batch))
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--out", str(out), "--resume"])
    assert sum(counted) < 14 - 1  # only the rest was encoded (8 rows were done, one of them unreadable)
    _same(load(out), load(whole))
    assert not (tmp_path / "ann.npz.partial").exists()


def test_resume_and_shard_refusals_are_one_line(runner, cli, tiny_clip, folder, tmp_path):
    out = tmp_path / "ann.npz"
    (tmp_path / "ann.npz.partial").mkdir()
    (tmp_path / "ann.npz.partial" / "identity.json").write_text(json.dumps({"settings": {"templates": "imagenet"}}))
    cases = [
        ([str(folder), *_clip(tiny_clip), "--out", str(out), "--resume"], "was made by another call (changed:", 1),
        ([str(folder), *_clip(tiny_clip), "--out", str(tmp_path / "new.npz"), "--resume"], "no interrupted annotation to continue", 1),
        (["digits", "--annotator", "simulated", "--shard", "1/2", "--out", str(tmp_path / "s.npz")],
         "--shard needs a streaming annotator (clip); the simulated annotator", 1),
        (["digits", "--annotator", "simulated", "--resume", "--out", str(tmp_path / "s.npz")],
         "--resume needs a streaming annotator (clip)", 1),
        (["digits", "--annotator", "synthetic", "--shard", "1/2", "--out", str(tmp_path / "s.npz")],
         "the synthetic annotator has no voters to share out", 1),
        ([str(folder), *_clip(tiny_clip), "--shard", "1/9", "--out", str(tmp_path / "s.npz")], "use at most 7 shards", 1),
        ([str(folder), str(folder), *_clip(tiny_clip), "--out", str(tmp_path / "s.npz")], "give one DATA", 1),
    ]
    for args, expected, code in cases:
        result = runner.invoke(cli, ["annotate", *args])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == code and expected in lines[-1], (args, result.stderr)
        assert not any(line.startswith("Traceback") for line in lines)


def test_shard_auto_under_torchrun_names_each_ranks_file(runner, cli, tiny_clip, folder, tmp_path, monkeypatch):
    pattern = str(tmp_path / "ann-{shard}.npz")
    for rank in range(3):  # what torchrun --nproc_per_node 3 sets in each of its processes
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--shard", "auto", "--out", pattern])
    files = sorted(tmp_path.glob("ann-*-of-3.npz"))
    assert [f.name for f in files] == ["ann-1-of-3.npz", "ann-2-of-3.npz", "ann-3-of-3.npz"]
    assert [load(f).extra["shard"]["index"] for f in files] == [1, 2, 3]
    monkeypatch.delenv("RANK")
    result = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--shard", "auto", "--out", pattern])
    assert result.exit_code == 1 and "--shard auto: RANK not set" in result.stderr
    result = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--out", pattern])
    assert result.exit_code == 1 and "{shard} is filled in only with --shard" in result.stderr


def test_each_rank_takes_its_own_gpu():
    from coreg_edge.utils import rank_device

    assert rank_device("cuda", {"LOCAL_RANK": "3"}) == "cuda:3"
    assert rank_device("cpu", {"LOCAL_RANK": "3"}) == "cpu" and rank_device("cuda", {}) == "cuda"


def test_torchrun_writes_one_shard_per_rank_and_they_merge(runner, cli, tiny_clip, folder, tmp_path):
    """The real launcher: `torchrun --nproc_per_node 2 -m coreg_edge annotate ... --shard auto`."""
    import os
    import subprocess
    import sys

    pattern = str(tmp_path / "ann-{shard}.npz")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0", "-m",
         "coreg_edge", "annotate", str(folder), *_clip(tiny_clip), "--shard", "auto", "--out", pattern, "-q"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stderr[-2000:]
    shards = sorted(tmp_path.glob("ann-*-of-2.npz"))
    assert [p.name for p in shards] == ["ann-1-of-2.npz", "ann-2-of-2.npz"]
    merged, one = tmp_path / "merged.npz", tmp_path / "one.npz"
    _annotate(runner, cli, ["--merge", *map(str, shards), "--out", str(merged)])
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--out", str(one)])
    _same(load(merged), load(one))


def test_a_failed_new_call_keeps_a_killed_calls_votes(runner, cli, tiny_clip, folder, tmp_path, monkeypatch, killed_at):
    from coreg_edge.annotate.clip import ClipEmbedder

    real = killed_at(5)
    out = tmp_path / "ann.npz"
    assert runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--out", str(out), "-q"]).exit_code == 130
    monkeypatch.setattr(ClipEmbedder, "encode", real)
    chunks = sorted((tmp_path / "ann.npz.partial").glob("chunk-*.npz"))
    typo = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--templates", str(tmp_path / "nope.txt"),
                               "--out", str(out)])  # fmt: skip
    assert typo.exit_code == 1 and sorted((tmp_path / "ann.npz.partial").glob("chunk-*.npz")) == chunks
    changed = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--mode", "topk", "--out", str(out), "--resume"])
    assert changed.exit_code == 1 and "(changed: mode)" in changed.stderr  # names the option
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--out", str(out), "--resume"])
    assert out.is_file() and not (tmp_path / "ann.npz.partial").exists()


def test_shards_spread_batches_evenly_and_bad_ranks_are_refused(runner, cli, tiny_clip, folder, tmp_path, monkeypatch):
    from coreg_edge.annotate.shards import parse_shard, shard_rows
    from coreg_edge.errors import UserError

    for count in range(1, 7):  # 41 items, 6 batches of 8: every shard count up to 6 gives non-empty shards
        parts = [shard_rows(41, k, count, 8) for k in range(1, count + 1)]
        assert all(len(p) for p in parts) and np.array_equal(np.concatenate(parts), np.arange(41))
        assert all(p[0] % 8 == 0 for p in parts)  # each starts on a batch boundary
    for env, expected in [({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK must be within [0, WORLD_SIZE)"),
                          ({"RANK": "abc", "WORLD_SIZE": "2"}, "must be whole numbers"),
                          ({"RANK": "0", "WORLD_SIZE": "0"}, "RANK must be within")]:  # fmt: skip
        with pytest.raises(UserError, match=expected.replace("[", r"\[").replace(")", r"\)")):
            parse_shard("auto", env)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--shard", "1/2", "--out", str(a)])
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--wording", "a photo of {}", "--shard", "2/2", "--out", str(b)])
    mixed = runner.invoke(cli, ["annotate", "--merge", str(a), str(b), "--out", str(tmp_path / "m.npz")])
    assert mixed.exit_code == 1 and "other prompt wording" in mixed.stderr
    into_input = runner.invoke(cli, ["annotate", "--merge", str(a), str(b), "--out", str(a)])
    assert into_input.exit_code == 1 and "is one of the shards to merge" in into_input.stderr
    assert load(a).extra["shard"]["index"] == 1  # untouched


def test_resume_checks_batch_size_and_the_voters_themselves(runner, cli, tiny_clip, folder, tmp_path, monkeypatch,
                                                           killed_at):  # fmt: skip
    from coreg_edge.annotate.clip import ClipEmbedder

    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}\nan image of a {}\n")
    real = killed_at(3)
    out = tmp_path / "ann.npz"
    args = [str(folder), *_clip(tiny_clip), "--templates", str(templates), "--out", str(out)]
    assert runner.invoke(cli, ["annotate", *args, "-q"]).exit_code == 130
    monkeypatch.setattr(ClipEmbedder, "encode", real)
    other_batch = runner.invoke(cli, ["annotate", *args, "--resume", "--batch-size", "4"])
    assert other_batch.exit_code == 1 and "changed: batch_size" in other_batch.stderr
    templates.write_text("a drawing of a {}\na sketch of a {}\n")  # same file, same count, other voters
    edited = runner.invoke(cli, ["annotate", *args, "--resume"])
    assert edited.exit_code == 1 and "holds other voters' votes" in edited.stderr


def test_chunks_continue_after_the_highest_number(tmp_path):
    from coreg_edge.annotate.journal import _last_chunk

    for n in (1, 3):  # a gap left by an interrupted flush
        (tmp_path / f"chunk-{n:06d}.npz").write_bytes(b"")
    assert _last_chunk(tmp_path) == 3 and _last_chunk(tmp_path / "none") == 0


def test_shard_usage_errors_exit_2_before_any_work(runner, cli, tmp_path):
    """A malformed --shard is a usage error (exit 2, as click's own), refused by the settings before DATA opens."""
    for value, expected in (("3/2", "K must be between 1 and N"), ("0/2", "K must be between 1 and N"),
                            ("half", "give K/N"), ("1/0", "K must be between 1 and N")):  # fmt: skip
        result = runner.invoke(cli, ["annotate", "no-such-folder", "--shard", value, "--out", str(tmp_path / "s.npz")])
        assert result.exit_code == 2, (value, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith(f"Error: --shard {value}: {expected}"), result.stderr


def test_shard_auto_without_shard_placeholder_is_refused_before_any_work(runner, cli, tiny_clip, folder, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    """Every torchrun rank would write (and replace) the same file: refused, naming {shard}, before DATA opens."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "ann.npz"
    result = runner.invoke(cli, ["annotate", str(tmp_path / "missing"), *_clip(tiny_clip), "--shard", "auto",
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 1 and "{shard}" in result.stderr.strip().splitlines()[-1], result.stderr
    assert not out.exists() and not (tmp_path / "ann.npz.partial").exists()


def test_resume_refuses_renamed_or_edited_images(runner, cli, tiny_clip, folder, tmp_path, killed_at):
    """The resume identity holds the items themselves (ids, size, mtime), not their count: a renamed image with
    the same count took another image's votes."""
    killed_at(5)
    out = tmp_path / "ann.npz"
    assert runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--out", str(out), "-q"]).exit_code == 130
    first = sorted((folder / "dog").glob("*.png"))[0]
    first.rename(first.with_name("zz_" + first.name))  # same count, other items
    result = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--out", str(out), "--resume"])
    assert result.exit_code == 1, result.stderr
    assert "the images (renamed, replaced or edited since)" in result.stderr.strip().splitlines()[-1]
    first.with_name("zz_" + first.name).rename(first)  # back as they were: resumes
    assert runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--out", str(out), "--resume", "-q"]).exit_code == 0


def test_resume_and_merge_identify_weights_by_content(runner, cli, tiny_clip, folder, tmp_path, killed_at):
    """Other weights behind the same --pretrained path: shards are not merged, a killed call does not resume."""
    import torch

    config, checkpoint = tiny_clip
    weights = tmp_path / "weights.pt"
    weights.write_bytes(checkpoint.read_bytes())
    args = ["--clip-model", str(config), "--pretrained", str(weights), "--classes", "cat,dog,bird", "--batch-size", "2"]
    _annotate(runner, cli, [str(folder), *args, "--shard", "1/2", "--out", str(tmp_path / "s1.npz")])
    state = torch.load(checkpoint, weights_only=True)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, weights)  # other weights, same path
    _annotate(runner, cli, [str(folder), *args, "--shard", "2/2", "--out", str(tmp_path / "s2.npz")])
    assert load(tmp_path / "s1.npz").annotator["pretrained_sha256"] != load(tmp_path / "s2.npz").annotator["pretrained_sha256"]
    result = runner.invoke(cli, ["annotate", "--merge", str(tmp_path / "s1.npz"), str(tmp_path / "s2.npz"),
                                 "--out", str(tmp_path / "m.npz")])  # fmt: skip
    assert result.exit_code == 1 and "pretrained_sha256" in result.stderr, result.stderr

    killed_at(3)
    out = tmp_path / "ann.npz"
    assert runner.invoke(cli, ["annotate", str(folder), *args, "--out", str(out), "-q"]).exit_code == 130
    weights.write_bytes(checkpoint.read_bytes())
    result = runner.invoke(cli, ["annotate", str(folder), *args, "--out", str(out), "--resume"])
    assert result.exit_code == 1 and "the weights' content" in result.stderr, result.stderr


def test_merge_warns_about_the_options_it_ignores(runner, cli, tiny_clip, folder, tmp_path):
    paths = []
    for k in (1, 2):
        paths.append(str(tmp_path / f"s{k}.npz"))
        _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--shard", f"{k}/2", "--out", paths[-1]])
    result = runner.invoke(cli, ["annotate", "--merge", *paths, "--out", str(tmp_path / "m.npz"), "--reject", "0.5",
                                 "--classes", "a,b,c"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "ignores --classes, --reject" in warnings[0], result.stderr
    result = runner.invoke(cli, ["annotate", "--merge", *paths, "--out", str(tmp_path / "m2.npz")])
    assert result.exit_code == 0 and "Warning" not in result.stderr


def test_every_item_rejected_keeps_the_votes_for_a_resume_with_a_lower_reject(runner, cli, tiny_clip, folder,
                                                                               tmp_path, monkeypatch):  # fmt: skip
    """--reject filters finished votes only: after "every item was rejected" the votes stay in OUT.partial/ and
    --resume --reject LOWER reuses them (nothing is encoded again); --reject 1 is refused before any work."""
    from coreg_edge.annotate.clip import ClipEmbedder

    out = tmp_path / "ann.npz"
    result = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--reject", "1", "--out", str(out)])
    assert result.exit_code == 2 and "--reject" in result.stderr and not (tmp_path / "ann.npz.partial").exists()
    result = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--reject", "0.99", "--out", str(out)])
    line = result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 1 and "every item was rejected" in line and "--resume" in line, result.stderr
    assert (tmp_path / "ann.npz.partial").is_dir() and not out.exists()
    encoded = []
    monkeypatch.setattr(ClipEmbedder, "encode", lambda self, batch: encoded.append(len(batch)))
    _annotate(runner, cli, [str(folder), *_clip(tiny_clip), "--reject", "0.0", "--out", str(out), "--resume"])
    assert encoded == [] and load(out).num_items == 13  # 14 images, one unreadable


def test_annotate_bounds_workers_by_the_cores_with_one_warning(runner, cli, tiny_clip, folder, tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    result = runner.invoke(cli, ["annotate", str(folder), *_clip(tiny_clip), "--workers", "32", "--out",
                                 str(tmp_path / "a.npz")])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "--workers" in line or "DataLoader" in line] == [
        "Warning: --workers 32: this machine has 2 CPU core(s) for this process; using 2"
    ]
