"""The second bad-input tour's messages (issue "Nothing lost, nothing run, nothing unclear", items 6-7):
each through the CLI where a user meets it, each failing on the code before the fix."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from coreg_edge.errors import UserError

TINY = ["--backbone", "test_resnet", "--image-size", "8", "--batch-size", "64", "-q"]


def _last(result) -> str:
    return result.stderr.strip().splitlines()[-1]


class _Payload:
    """Pickled, it would run code on load: the checkpoint loader must refuse it, not advise loading it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_checkpoint_is_refused_without_relaying_the_advice(
    runner, cli, digits_annotation, tmp_path
):
    import torch

    run = tmp_path / "run"
    args = ["train", str(digits_annotation), "--out", str(run), "--method", "proden", "--epochs", "2", *TINY]
    assert runner.invoke(cli, args).exit_code == 0
    (run / "selection.json").unlink()  # unfinished again, so that --resume loads the checkpoint
    marker = tmp_path / "payload-ran"
    torch.save({"peers": _Payload(marker)}, run / "checkpoint.pt")
    result = runner.invoke(cli, ["train", "--resume", "--out", str(run), "-q"])
    assert result.exit_code == 1 and not marker.exists()
    assert "not a checkpoint this program wrote" in _last(result)
    assert "weights_only" not in result.output and "Traceback" not in result.output


def test_pretrained_that_is_text_or_another_architecture(runner, cli, tiny_clip, class_folder, tmp_path):
    import torch

    config, _ = tiny_clip
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    args = ["annotate", str(class_folder), "--clip-model", str(config), "-q"]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "a.npz"), "--pretrained", str(text)])
    assert result.exit_code == 1 and "not a PyTorch checkpoint of open_clip weights" in _last(result)
    assert "IndexError" not in result.output
    other = tmp_path / "other.pt"
    torch.save({f"encoder.block{i}.weight": torch.zeros(2) for i in range(400)}, other)
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "b.npz"), "--pretrained", str(other)])
    line = _last(result)
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
    assert strict.exit_code == 1 and "huge.png" in _last(strict) and "--max-image-pixels" in _last(strict)


def test_format_version_as_a_string_is_named_as_such(digits_annotation, runner, cli, tmp_path):
    with np.load(digits_annotation) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = "1"
    arrays["meta"] = np.asarray(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    result = runner.invoke(cli, ["info", str(bad)])
    assert result.exit_code == 1
    assert "format_version must be a whole number (got '1', a str)" in _last(result)


def test_annotate_out_without_npz_suffix_is_refused(runner, cli, tmp_path):
    out = tmp_path / "noext"
    result = runner.invoke(cli, ["annotate", "digits", "--annotator", "synthetic", "--out", str(out), "-q"])
    assert result.exit_code == 1 and f"did you mean {out}.npz" in _last(result) and not out.exists()


def test_the_python_api_refuses_an_empty_array_and_names_topk(tmp_path):
    from coreg_edge.runtime.image import to_pil

    with pytest.raises(UserError, match="empty"):
        to_pil(np.zeros((0, 0, 3), np.uint8))
    from coreg_edge.runtime.classifier import Classifier

    with pytest.raises(UserError, match=r"^topk=0: must be a whole number >= 1"):
        Classifier.top(object.__new__(Classifier), np.zeros((1, 2)), topk=0)


def test_metrics_never_hold_a_bare_nan(tmp_path):
    from coreg_edge.training.run_folder import write_json
    from coreg_edge.utils import json_safe

    assert json_safe({"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": "x"}) == {
        "a": [1.0, None],
        "b": {"c": None},
        "d": "x",
    }
    write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=lambda name: 1 / 0) == {"loss": None}


def test_two_collapsed_peers_are_one_warning():
    from coreg_edge.training.coreg_method import warn_collapse

    verdict = {"collapsed": True, "largest_class_share": 0.81}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_collapse(1, {"a": verdict, "b": {**verdict, "largest_class_share": 0.83}})
        warn_collapse(2, {"a": {"collapsed": False, "largest_class_share": 0.2}})
    assert [str(w.message) for w in caught] == [
        "epoch 1: peers a and b predict one class for 81% / 83% of items (collapse); consider a longer --warmup"
    ]
