"""training/data.py: the labelled sets training evaluates on (--val selects the peer, --eval reports)."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from coreg_edge.data import open_source
from coreg_edge.errors import UserError
from coreg_edge.training.data import load_eval_set, preprocess_for

CPU = torch.device("cpu")
CLASSES = ["bird", "cat", "dog"]


def _load(folder, option="--val"):
    config = preprocess_for(open_source(str(folder)), 8, 3)
    return load_eval_set(str(folder), CLASSES, config, CPU, cache="memory", quiet=True, option=option)


def test_val_refuses_one_image_in_two_classes(class_folder):
    """The same file content in two class folders (two names) has no one true label: it selected by noise."""
    shutil.copy(class_folder / "cat" / "img_001.png", class_folder / "dog" / "renamed.png")
    with pytest.raises(UserError) as info:
        _load(class_folder)
    message = str(info.value)
    assert message.startswith(f"--val {class_folder}: ") and "\n" not in message
    assert f"{class_folder / 'cat' / 'img_001.png'} and {class_folder / 'dog' / 'renamed.png'}" in message
    assert "the same image in two classes (cat, dog)" in message


def test_val_counts_a_copied_image_once_and_says_so(class_folder):
    """A copy within its own class would weigh that image twice in the accuracy that selects the peer."""
    plain = _load(class_folder)
    shutil.copy(class_folder / "cat" / "img_002.png", class_folder / "cat" / "zz_copy.png")
    with pytest.warns(UserWarning, match=r"1 file\(s\) repeat an image of the same class .*zz_copy.png = .*img_002.png"):
        val = _load(class_folder)
    assert torch.equal(val.labels, plain.labels) and len(val.store) == len(plain.store)
    assert torch.equal(val.store.images, plain.store.images)
    assert list(class_folder.joinpath("cat").iterdir())  # the folder is left as it is
    assert (class_folder / "cat" / "zz_copy.png").exists()


def test_eval_keeps_a_published_split_as_it_is(class_folder):
    """--eval only reports: copies count as the published split has them (FER2013's test split has some)."""
    shutil.copy(class_folder / "cat" / "img_001.png", class_folder / "dog" / "renamed.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_load(class_folder, option="--eval").store) == 14
