"""The batch-fetch interface: memory and disk stores give the same bytes, and a run trains identically."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from coreg_edge.data import open_source
from coreg_edge.training import image_store
from coreg_edge.training import run_folder as rf
from coreg_edge.training.data import preprocess_for
from coreg_edge.training.image_store import (
    DiskStore,
    MemoryStore,
    build_store,
    choose_cache,
    decode_to_disk,
    decode_to_memory,
)

CPU = torch.device("cpu")
TINY = ["--backbone", "test_resnet", "--image-size", "16", "--batch-size", "64", "-q"]


def _digits():
    source = open_source("digits")
    return source, preprocess_for(source, 16, None), np.arange(0, len(source), 7)


def test_disk_and_memory_stores_fetch_the_same_bytes_in_any_order(tmp_path, monkeypatch):
    monkeypatch.setenv("COREG_EDGE_CACHE", str(tmp_path))
    source, config, indices = _digits()
    memory = build_store(source, indices, config, CPU, cache="memory", quiet=True)
    disk = build_store(source, indices, config, CPU, cache="disk", quiet=True)
    assert isinstance(memory, MemoryStore) and isinstance(disk, DiskStore)
    assert len(disk) == len(memory) == len(indices) and disk.shape == memory.shape == config.shape
    rows = torch.randperm(len(indices), generator=torch.Generator().manual_seed(0))[:50]
    for batch in (rows, rows[:1], rows[:0], torch.tensor([3, 3, 0])):
        a, b = memory.fetch(batch), disk.fetch(batch)
        assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b)
    assert disk.path.parent == tmp_path / "images" and disk.path.stat().st_size == len(indices) * int(np.prod(config.shape))


def test_the_disk_cache_is_written_once_and_follows_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("COREG_EDGE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    source = open_source(str(folder))
    config = preprocess_for(source, 8, None)
    first = decode_to_disk(source, np.arange(6), config, quiet=True)
    stamp = first.stat().st_mtime_ns
    assert decode_to_disk(source, np.arange(6), config, quiet=True) == first and first.stat().st_mtime_ns == stamp
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta["items"] == 6 and meta["shape"] == [3, 8, 8]
    assert not [p for p in first.parent.iterdir() if p.name.endswith(".tmp")]  # nothing half-written left
    other_items = decode_to_disk(source, np.arange(5), config, quiet=True)
    assert other_items != first
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "2.png")  # replaced
    os.utime(folder / "2.png", ns=(stamp + 10**9, stamp + 10**9))
    replaced = decode_to_disk(open_source(str(folder)), np.arange(6), config, quiet=True)
    assert replaced != first
    fresh = decode_to_memory(open_source(str(folder)), np.arange(6), config, quiet=True)
    assert torch.equal(DiskStore(replaced, 6, config.shape, CPU).fetch(torch.arange(6)), fresh)
    assert not torch.equal(DiskStore(first, 6, config.shape, CPU).fetch(torch.tensor([2])), fresh[2:3])


def test_a_cache_of_the_right_size_but_other_bytes_is_decoded_again(tmp_path, monkeypatch):
    """Only the size was checked: a cache file of other bytes (a disk error, a bad copy) was trained on."""
    monkeypatch.setenv("COREG_EDGE_CACHE", str(tmp_path))
    # 10 rows of 3x16x16 a block: several blocks
    monkeypatch.setattr(image_store, "DIGEST_BLOCK_BYTES", 768 * 10, raising=False)
    source, config, indices = _digits()
    path = decode_to_disk(source, indices, config, quiet=True, workers=2)
    good = path.read_bytes()
    with open(path, "r+b") as fh:  # one byte of row 25, the size unchanged
        fh.seek(25 * 768 + 100)
        fh.write(bytes([good[25 * 768 + 100] ^ 0xFF]))
    with pytest.warns(UserWarning, match=r"rows 20-29 are not the bytes written there .*; decoding the images again"):
        assert decode_to_disk(source, indices, config, quiet=True) == path
    assert path.read_bytes() == good
    memory = decode_to_memory(source, indices, config, quiet=True)
    assert torch.equal(DiskStore(path, len(indices), config.shape, CPU).fetch(all_rows_of(indices)), memory)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["block_rows"] == 10 and len(meta["block_sha256"]) == -(-len(indices) // 10)
    assert image_store.cache_problem(path, 768, len(indices), workers=2) is None
    path.with_suffix(".json").unlink()  # written by an older version: no digests to check against
    with pytest.warns(UserWarning, match="no digest of its bytes is recorded"):
        decode_to_disk(source, indices, config, quiet=True)
    assert path.read_bytes() == good and image_store.cache_problem(path, 768, len(indices)) is None


def all_rows_of(indices: np.ndarray) -> torch.Tensor:
    return torch.arange(len(indices))


def test_auto_keeps_small_data_in_memory_and_large_on_disk(monkeypatch):
    _, config, _ = _digits()
    assert choose_cache("auto", 1000, config)[0] == "memory"
    monkeypatch.setattr(image_store, "MEMORY_LIMIT", 256 * 999)
    kind, why = choose_cache("auto", 1000, config)
    assert kind == "disk" and "above the" in why
    assert choose_cache("memory", 10**9, config) == ("memory", "--cache memory")


def test_the_user_is_told_where_the_images_wait(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COREG_EDGE_CACHE", str(tmp_path))
    source, config, indices = _digits()
    build_store(source, indices, config, CPU, quiet=True, what="training images")
    assert capsys.readouterr().err == ""
    build_store(source, indices, config, CPU, quiet=False, what="training images")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"training images: {len(indices)} in memory (") and "MiB, within the 2.0 GiB kept in memory" in line
    disk = build_store(source, indices, config, CPU, cache="disk", quiet=False, what="training images")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"on disk, read batch by batch from {disk.path} (--cache disk)" in line


def test_an_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COREG_EDGE_CACHE", str(blocker))
    source, config, indices = _digits()
    with pytest.raises(Exception, match="cannot create the image cache .*COREG_EDGE_CACHE"):
        decode_to_disk(source, indices, config, quiet=True)


def _weights(run):
    return {peer: load_file(str(rf.peer_file(run, peer))) for peer in ("a", "b")}


def _same_run(first, second):
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in rf.read_metrics(first)]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"} for m in rf.read_metrics(second)]
    w1, w2 = _weights(first), _weights(second)
    assert all(torch.equal(w1[p][k], w2[p][k]) for p in w1 for k in w1[p])


def test_a_run_from_the_disk_cache_equals_the_in_memory_run_and_resumes_exactly(
    runner, cli, digits_annotation, tmp_path, monkeypatch
):
    # 8 px (the digits' own size): the cache's equivalence does not depend on the size, and CI time does
    args = [str(digits_annotation), "--epochs", "3", "--warmup", "1", "--set", "queue_size=128",
            "--eval", "digits:test", *TINY[:2], "--image-size", "8", *TINY[4:]]  # fmt: skip
    memory, disk, resumed = tmp_path / "memory", tmp_path / "disk", tmp_path / "resumed"
    assert runner.invoke(cli, ["train", *args, "--cache", "memory", "--out", str(memory)]).exit_code == 0
    assert runner.invoke(cli, ["train", *args, "--cache", "disk", "--out", str(disk)]).exit_code == 0
    _same_run(memory, disk)
    assert json.loads((disk / rf.CONFIG).read_text())["settings"]["cache"] == "disk"

    import coreg_edge.training.coreg_method as method

    original, calls = method.coreg_epoch, {"n": 0}

    def interrupt_in_epoch_2(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*a, **kw)

    monkeypatch.setattr(method, "coreg_epoch", interrupt_in_epoch_2)
    assert runner.invoke(cli, ["train", *args, "--cache", "disk", "--out", str(resumed)]).exit_code == 130
    monkeypatch.setattr(method, "coreg_epoch", original)
    result = runner.invoke(cli, ["train", "--resume", "--out", str(resumed), "-q"])
    assert result.exit_code == 0, result.output
    _same_run(disk, resumed)
