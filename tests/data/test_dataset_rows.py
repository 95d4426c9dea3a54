"""Built-in datasets as registry rows: one generic opener reads each row, and it does what the per-name code
did (same constructor arguments, same labels, same split indices, same errors). No torchvision data is
downloaded: a fake `torchvision.datasets` records what each constructor is given."""

from __future__ import annotations

import ast
import dataclasses
import types
from pathlib import Path

import numpy as np
import pytest

import coreg_edge.errors
from coreg_edge.data import DATASETS, DatasetInfo, open_source
from coreg_edge.data.builtin import _fixed_split
from coreg_edge.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
N = 23  # items in every fake dataset

# What the per-name opener passed each torchvision constructor besides the root and download=, per split,
# and where it read the labels. Written out here, not derived from the rows, so a wrong row fails.
OLD_CALLS = {
    "cifar10": ("CIFAR10", {"train": {"train": True}, "test": {"train": False}}, "targets"),
    "cifar100": ("CIFAR100", {"train": {"train": True}, "test": {"train": False}}, "targets"),
    "svhn": ("SVHN", {"train": {"split": "train"}, "test": {"split": "test"}}, "labels"),
    "fmnist": ("FashionMNIST", {"train": {"train": True}, "test": {"train": False}}, "targets.numpy()"),
    "eurosat": ("EuroSAT", {"train": {}, "test": {}}, "targets"),
    "gtsrb": ("GTSRB", {"train": {"split": "train"}, "test": {"split": "test"}}, "_samples"),
}


class _Targets(list):
    """A stand-in for a torch tensor of labels whose .numpy() differs from the list, so a reader that took
    the list where the old code called .numpy() (or the other way round) is caught."""

    def numpy(self) -> np.ndarray:
        return np.asarray(self) * 10 + 1


# Each place a label can be read from holds different labels.
EXPECTED_LABELS = {
    "targets": list(range(N)),
    "targets.numpy()": [i * 10 + 1 for i in range(N)],
    "labels": [(N - 1 - i) % 7 for i in range(N)],
    "_samples": [(i * 3) % 5 for i in range(N)],
}


class FakeDatasets(types.SimpleNamespace):
    """torchvision.datasets with every class the rows name; `raises` makes the constructors fail."""

    def __init__(self, raises: Exception | None = None):
        super().__init__()
        self.calls: list[tuple[str, tuple, dict]] = []
        for cls_name in {row[0] for row in OLD_CALLS.values()}:
            setattr(self, cls_name, self._make(cls_name, raises))

    def _make(self, cls_name: str, raises: Exception | None):
        calls = self.calls

        class Fake:
            def __init__(self, *args, **kwargs):
                calls.append((cls_name, args, kwargs))
                if raises is not None:
                    raise raises
                self.targets = _Targets(range(N))
                self.labels = np.asarray(EXPECTED_LABELS["labels"])
                self._samples = [
                    (f"img{i}.ppm", label) for i, label in enumerate(EXPECTED_LABELS["_samples"])
                ]
                self.classes = [f"class {i}" for i in range(100)]

        return Fake


@pytest.fixture
def fake_tv(monkeypatch):
    def install(raises: Exception | None = None) -> FakeDatasets:
        fake = FakeDatasets(raises)
        monkeypatch.setattr(coreg_edge.errors, "require", lambda module, what: fake)
        return fake

    return install


TORCHVISION_ROWS = [name for name, info in DATASETS.items() if not info.own_loader]


def test_every_torchvision_row_is_covered_here():
    assert set(TORCHVISION_ROWS) == set(OLD_CALLS)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name", sorted(OLD_CALLS))
def test_the_generic_opener_calls_each_constructor_as_before(fake_tv, tmp_path, name, split):
    fake = fake_tv()
    for download in (False, True):
        fake.calls.clear()
        source = open_source(f"{name}:{split}", data_dir=tmp_path, download=download)
        cls_name, split_kwargs, label_source = OLD_CALLS[name]
        assert fake.calls == [(cls_name, (tmp_path / name,), {**split_kwargs[split], "download": download})]
        expected = np.asarray(EXPECTED_LABELS[label_source])
        if name == "eurosat":  # the fixed 80/20 split of the whole set
            expected = expected[_fixed_split(N, split)]
        assert source.labels.dtype == np.int64 and source.labels.tolist() == expected.tolist()
        assert source.item_ids == [f"{name}:{split}/{i}" for i in range(len(expected))]
        assert source.root == name and source.split == split and source.kind == "builtin"
        assert source.channels == DATASETS[name].channels
        info = DATASETS[name]
        assert source.class_names == (
            list(info.class_names) if info.class_names else [f"class {i}" for i in range(100)]
        )


def test_eurosat_split_is_fixed_seeded_and_disjoint(fake_tv, tmp_path):
    fake_tv()
    train = open_source("eurosat:train", data_dir=tmp_path)
    test = open_source("eurosat", data_dir=tmp_path, channels=1)  # default split: train
    assert test.split == "train" and test.channels == 1 and test.labels.tolist() == train.labels.tolist()
    test = open_source("eurosat:test", data_dir=tmp_path)
    # the fake's `targets` are 0..N-1, so the labels are the indices kept: the seed-0 permutation's last 20%
    assert test.labels.tolist() == [1, 9, 14, 15, 17]
    assert len(train.labels) == int(N * 0.8)
    assert sorted(train.labels.tolist() + test.labels.tolist()) == list(range(N))
    assert not any(DATASETS[name].fixed_split for name in ("cifar10", "svhn", "gtsrb"))


@pytest.mark.parametrize("name", sorted(OLD_CALLS))
def test_missing_and_download_errors_keep_their_words(fake_tv, tmp_path, name):
    root = tmp_path / name
    fake_tv(RuntimeError("Dataset not found"))
    with pytest.raises(UserError) as missing:
        open_source(f"{name}:test", data_dir=tmp_path)
    assert str(missing.value) == (
        f"{name} is not in {root}; add --download to fetch it (needs network), "
        "or set COREG_EDGE_DATA / --data-dir to where it already is"
    )
    with pytest.raises(UserError) as failed:
        open_source(f"{name}:test", data_dir=tmp_path, download=True)
    assert (
        str(failed.value) == f"could not download {name} into {root} (Dataset not found); check the network"
    )
    fake_tv(OSError("connection refused"))
    with pytest.raises(UserError) as offline:
        open_source(name, data_dir=tmp_path, download=True)
    assert (
        str(offline.value) == f"could not download {name} into {root}: connection refused; check the network"
    )


def test_digits_is_the_fixed_split_of_sklearn_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    cut = int(len(order) * 0.8)
    seen = []
    for spec, keep in (("digits", np.sort(order[:cut])), ("digits:test", np.sort(order[cut:]))):
        source = open_source(spec, channels=1)
        assert type(source).__name__ == "ArraySource" and source.class_names == [str(i) for i in range(10)]
        assert source.labels.dtype == np.int64 and np.array_equal(source.labels, bunch.target[keep])
        images = np.round(bunch.images[keep] * (255.0 / 16.0)).astype(np.uint8)
        for i in (0, 7, len(keep) - 1):
            assert np.array_equal(np.asarray(source.load(i)), images[i])
        seen.append(keep)
    assert sorted(np.concatenate(seen).tolist()) == list(range(len(bunch.target)))


def test_a_new_dataset_is_one_row(fake_tv, tmp_path, monkeypatch):
    fake = fake_tv()
    row = dataclasses.replace(DATASETS["svhn"], name="house-numbers", reader="GTSRB", labels="sample_labels")
    monkeypatch.setitem(DATASETS, "house-numbers", row)
    source = open_source("house-numbers:test", data_dir=tmp_path)
    assert fake.calls == [("GTSRB", (tmp_path / "house-numbers",), {"split": "test", "download": False})]
    assert source.labels.tolist() == EXPECTED_LABELS["_samples"]


def test_rows_are_checked_when_written():
    row = DATASETS["cifar10"]
    for bad in ({"reader": ""}, {"split_argument": "fold"}, {"strong_augment": "mixup"}):
        with pytest.raises(ValueError):
            dataclasses.replace(row, **bad)
    with pytest.raises(ValueError, match="class_names"):
        DatasetInfo("own", 3, 8, (0.5,) * 3, (0.5,) * 3, flip=False, reader="somewhere:load")


def test_strong_view_and_flips_come_from_the_rows():
    from coreg_edge.training.assembly import CUTOUT_DATASETS, dataset_views

    for name, info in DATASETS.items():
        assert dataset_views({"source": "builtin", "root": name}) == (
            info.flip, "cutout" if name == "fmnist" else "randaugment"
        )  # fmt: skip
    assert dataset_views({"source": "builtin", "root": "fmnist"}) == (True, "cutout")
    assert dataset_views({"source": "builtin", "root": "svhn"}) == (False, "randaugment")
    assert dataset_views({"source": "folder", "root": "/data/fmnist"}) == (True, "randaugment")
    assert dataset_views({"source": "folder", "root": "fmnist"}) == (True, "randaugment")  # a folder named so
    assert CUTOUT_DATASETS == ("fmnist",)


def _row_name_literals(tree: ast.AST) -> set[int]:
    """ids of the constants that name a row: DatasetInfo("name", ...)'s first argument."""
    return {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DatasetInfo" and node.args
    }


def test_no_code_names_a_built_in_dataset():
    """A dataset's name is written once, in its row: data/ and training/ hold no `name == "svhn"` branch, no
    tuple of names (the old CUTOUT_DATASETS = ("fmnist",)), no other literal naming a built-in."""
    found = []
    for folder in ("coreg_edge/data", "coreg_edge/training"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            rows = _row_name_literals(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in DATASETS and id(node) not in rows:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_row_names_a_real_torchvision_constructor(tmp_path, split):
    """The rows' readers and split arguments fit torchvision's own signatures: an empty folder is the
    one-line "add --download" error, never a TypeError or AttributeError."""
    pytest.importorskip("torchvision.datasets")
    for name in TORCHVISION_ROWS:
        with pytest.raises(UserError, match="add --download"):
            open_source(f"{name}:{split}", data_dir=tmp_path)
