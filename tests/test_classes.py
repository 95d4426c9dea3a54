"""coreg_edge/classes.py: the one class-name grammar (annotate, predict, bench, Classifier, recipes) and the one
remap of a labelled source's classes onto a model's order (--eval/--val, parity, report, annotate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreg_edge.classes import ClassNames, class_folders, class_positions, read_classes, remap_labels
from coreg_edge.errors import UserError


def test_a_toml_or_json_table_gives_each_class_its_names(tmp_path):
    toml = tmp_path / "classes.toml"
    toml.write_text('cat = ["cat", "kitten", "tabby cat"]\ndog = "dog"\nbird = ["bird", "bird"]\n')
    parsed = read_classes(str(toml))
    assert parsed.names == ("cat", "dog", "bird")  # the file's order
    assert parsed.synonyms == {"cat": ["cat", "kitten", "tabby cat"], "dog": ["dog"], "bird": ["bird"]}
    js = tmp_path / "classes.json"
    js.write_text(json.dumps({"cat": ["cat", "kitten"], "dog": "puppy"}))
    assert read_classes(str(js)) == ClassNames(("cat", "dog"), {"cat": ["cat", "kitten"], "dog": ["puppy"]})
    assert read_classes({"a": "x", "b": ["y", "z"]}).synonyms == {"a": ["x"], "b": ["y", "z"]}
    assert read_classes("cat,dog") == ClassNames(("cat", "dog"), None)


def test_every_reader_takes_the_same_files(tmp_path):
    """A list file, a text file and a table file: the same names for annotate, predict and the API."""
    listed = tmp_path / "names.json"
    listed.write_text('["cat", " dog "]')
    lines = tmp_path / "names.txt"
    lines.write_text("\ufeffcat\n\n  # a comment\ndog\n")
    bracket = tmp_path / "names.list"  # any file holding a JSON list, whatever its suffix
    bracket.write_text('["cat", "dog"]')
    table = tmp_path / "names.toml"
    table.write_text('cat = ["cat", "kitten"]\ndog = "dog"\n')
    for path in (listed, lines, bracket, table):
        assert read_classes(str(path)).names == ("cat", "dog"), path.name
    assert read_classes(["cat ", "dog"]).names == ("cat", "dog")
    assert read_classes("cat").names == ("cat",)  # one name (a model may be asked about one class)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('cat = []\ndog = "dog"\n', "'cat' must be a name or a non-empty list of names"),
        ('cat = [1]\ndog = "dog"\n', "'cat' must be a name"),
        ('cat = "cat"\n', "needs at least 2 classes (got 1)"),
        ("cat = [\n", "not valid TOML"),
    ],
)
def test_a_bad_classes_table_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "classes.toml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        read_classes(str(path), minimum=2)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("--classes")


def test_classes_files_are_read_forgivingly_and_refused_clearly(tmp_path):
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(UserError, match=r"not UTF-8 text"):
        read_classes(str(tmp_path / "bin.toml"))
    (tmp_path / "upper.TOML").write_text('cat = "kitty"\ndog = "dog"\n')
    assert read_classes(str(tmp_path / "upper.TOML")).synonyms == {"cat": ["kitty"], "dog": ["dog"]}
    for name, text, fragment in [
        ("dup.json", '{"cat": "a", "cat": "b", "dog": "d"}', "class 'cat' is given twice"),
        ("space.json", '{"cat": "a", " cat": "b", "dog": "d"}', "class 'cat' is given twice"),
        ("shared.toml", 'cat = "pet"\ndog = "pet"\n', "the name 'pet' is given to both 'cat' and 'dog'"),
        ("broken.json", '["cat", ', "not valid JSON"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=fragment):
            read_classes(str(tmp_path / name))
    (tmp_path / "bad.toml").write_text("cat = [\n")
    with pytest.raises(UserError) as info:
        read_classes(str(tmp_path / "bad.toml"))
    assert str(info.value).count("not valid TOML") == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a,a", "class_names lists 'a' twice"),
        ("a,,b", "class_names has an empty class name"),
        ("missing.txt", "class_names missing.txt: no such file"),
        ("sub/names", "class_names sub/names: no such file"),
    ],
)
def test_errors_name_the_option_the_caller_gave(value, message):
    with pytest.raises(UserError) as info:
        read_classes(value, option="class_names")
    assert str(info.value) == message


def test_class_positions_find_names_then_folder_names():
    names = ["cat/dog", "bird?", "fish"]
    assert class_folders(names) == ["cat_dog", "bird_", "fish"]
    assert class_positions(["fish", "cat_dog", "bird?", "eel"], names).tolist() == [2, 0, 1, -1]
    with pytest.raises(UserError, match="both become the folder 'a_b'"):
        class_folders(["a/b", "a?b"])
    # a folder name two classes share points at neither
    assert class_positions(["a_b"], ["a/b", "a?b"]).tolist() == [-1]


def test_remap_labels_puts_a_sources_labels_in_the_models_order():
    source_names = ["dog", "cat", "eel"]  # a labelled folder's sub-folders, sorted its own way
    labels = np.array([0, 1, 2, -1, 1])
    assert remap_labels(labels, source_names, ["cat", "dog"]).tolist() == [1, 0, -1, -1, 0]
    assert remap_labels(np.zeros(0, np.int64), source_names, ["cat"]).tolist() == []
