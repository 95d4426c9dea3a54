"""Classifier: same answer as onnxruntime on the reference tensor, inputs of every kind, batching, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from coreg_edge.errors import UserError
from coreg_edge.runtime import Classifier, ImageDecodeError, find_images, softmax
from coreg_edge.runtime.session import CPU, resolve_providers


@pytest.fixture(scope="module")
def classifier(tiny) -> Classifier:
    return Classifier(tiny.with_metadata, threads=1)


def test_reads_metadata(classifier: Classifier, class_names) -> None:
    assert classifier.class_names == class_names
    assert classifier.config.shape == (3, 16, 16)
    assert classifier.provider == CPU and classifier.threads == 1
    assert classifier.metadata["backbone"] == "tiny-cnn"


def test_top1_matches_raw_session(classifier: Classifier, tiny, image_folder: Path) -> None:
    paths = find_images(image_folder)
    tensor = classifier.preprocess(paths)
    session = ort.InferenceSession(str(tiny.with_metadata), providers=[CPU])
    logits = session.run(["logits"], {"images": tensor})[0]
    predictions = classifier.predict(paths, topk=4, batch_size=3)
    assert [p.index for p in predictions] == logits.argmax(1).tolist()
    probs = np.array([[t.prob for t in sorted(p.top, key=lambda t: t.index)] for p in predictions])
    np.testing.assert_allclose(probs, softmax(logits), atol=1e-6)
    # The model is trained to confident margins: each file is named after its class.
    for path, prediction in zip(paths, predictions, strict=True):
        assert path.stem.split("_")[1] == prediction.label and prediction.prob > 0.9


def test_accepts_paths_pil_and_arrays(
    classifier: Classifier, tmp_path: Path, color_image, class_names
) -> None:
    array = color_image(2, 30, 22, seed=5)
    path = tmp_path / "blue.png"
    Image.fromarray(array).save(path)
    by_path = classifier.predict_one(path)
    by_str = classifier.predict_one(str(path))
    by_pil = classifier.predict_one(Image.fromarray(array))
    by_array = classifier.predict_one(array)
    assert by_path == by_str == by_pil == by_array
    assert by_path.label == "blue" and len(by_path.top) == 4
    gray = classifier.predict_one(np.full((20, 20), 128, dtype=np.uint8))
    assert gray.label == "gray"
    # A 4-D array is a batch; a single array is one image.
    stack = np.stack([color_image(k, seed=k) for k in range(4)])
    assert [p.label for p in classifier.predict(stack)] == list(class_names)


def test_topk_and_batching(classifier: Classifier, image_folder: Path) -> None:
    paths = find_images(image_folder)
    assert [len(p.top) for p in classifier.predict(paths, topk=2)] == [2] * len(paths)
    assert len(classifier.predict_one(paths[0], topk=99).top) == 4
    assert classifier.predict(paths, batch_size=1) == classifier.predict(paths, batch_size=64)
    probs = classifier.probabilities(paths, batch_size=5)
    assert probs.shape == (8, 4) and np.allclose(probs.sum(1), 1, atol=1e-6)
    with pytest.raises(UserError, match="topk"):
        classifier.predict(paths, topk=0)


def test_corrupt_images(classifier: Classifier, image_folder: Path) -> None:
    bad = image_folder / "a" / "broken.png"
    bad.write_bytes(b"not an image at all")
    good = sorted((image_folder / "b").rglob("*.jpg"))[0]
    truncated = image_folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    paths = find_images(image_folder)
    with pytest.raises(ImageDecodeError, match="broken.png"):
        classifier.predict(paths)
    results = list(classifier.iter_predict(paths, skip_errors=True, batch_size=3))
    assert len(results) == len(paths)
    failed = {paths[i].name for i, r in enumerate(results) if not r.ok}
    assert failed == {"broken.png", "truncated.jpg"}
    assert all(r.label for r in results if r.ok)
    with pytest.raises(UserError):
        _ = results[paths.index(bad)].label


def test_find_images(tmp_path: Path) -> None:
    (tmp_path / "z").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["b.PNG", "a.jpg", "z/c.jpeg", "notes.txt", ".hidden/d.png", "._e.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == [
        "a.jpg",
        "b.PNG",
        "z/c.jpeg",
    ]
    assert find_images([tmp_path / "notes.txt", tmp_path / "missing.png"]) == [
        tmp_path / "notes.txt",
        tmp_path / "missing.png",
    ]


def test_providers() -> None:
    assert resolve_providers(None) == [CPU]
    assert resolve_providers("cpu") == [CPU]
    assert resolve_providers(["CPUExecutionProvider"]) == [CPU]
    with pytest.raises(UserError, match="not in this onnxruntime build; available: .*cpu"):
        resolve_providers("no-such-provider")


def test_fixed_batch_model(tiny, tmp_path: Path, color_image, class_names) -> None:
    """A foreign model exported with a fixed batch of 2: predict pads the last chunk, bench says what to do."""
    onnx = pytest.importorskip("onnx")
    from coreg_edge.runtime import run_bench

    proto = onnx.load(str(tiny.with_metadata))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, str(fixed))
    images = [color_image(k % 4, seed=k) for k in range(5)]
    clf = Classifier(fixed, batch_size=4)
    assert [p.label for p in clf.predict(images)] == [class_names[k % 4] for k in range(5)]
    with pytest.raises(UserError, match=r"fixed batch size of 2; use batch_sizes=\(2,\)"):  # the keyword
        run_bench(fixed, batch_sizes=(1, 2), warmup=0, iters=1)
    assert run_bench(fixed, batch_sizes=(2,), warmup=0, iters=1).main.results[0].batch_size == 2


def test_python_api_errors_name_the_keyword_not_the_flag(tiny) -> None:
    """A notebook passes keywords: its errors must name them (threads=), never a CLI flag (--threads)."""
    from coreg_edge.runtime import run_bench

    cases = [
        (lambda: Classifier(tiny.with_metadata, threads=0), "threads=0"),
        (lambda: Classifier(tiny.with_metadata, batch_size=0), "batch_size=0"),
        (lambda: Classifier(tiny.with_metadata, input_size="big"), "input_size='big'"),
        (lambda: Classifier(tiny.with_metadata, mean="x"), "mean='x'"),
        (lambda: Classifier(tiny.with_metadata, class_names="a,,b"), "class_names has an empty class name"),
        (lambda: Classifier(tiny.without_metadata), "class_names=[...], mean=(m, m, m), std=(s, s, s)"),
        (lambda: Classifier(tiny.with_metadata).predict([], topk=0), "topk=0"),
        (lambda: run_bench(tiny.with_metadata, threads=0, iters=1), "threads="),
    ]
    for call, keyword in cases:
        with pytest.raises(UserError) as info:
            call()
        assert keyword in str(info.value) and "--" not in str(info.value), str(info.value)


def _rejected_copy(tiny, folder: Path, parity: dict | None) -> Path:
    import json
    import shutil

    folder.mkdir()
    rejected = folder / "model.int8.onnx.rejected"
    shutil.copy(tiny.with_metadata, rejected)
    if parity is not None:
        (folder / "parity.json").write_text(json.dumps(parity))
    return rejected


REJECTED_PARITY = {
    "ok": False,
    "checks": {"model.int8.onnx": {"top1_agreement": {"value": 0.9, "op": ">=", "threshold": 0.98, "ok": False}}},
    "files": {"model.int8.onnx": {"published": False, "rejected_as": "model.int8.onnx.rejected"}},
}


def test_classifier_warns_on_a_rejected_model_naming_why(tiny, tmp_path: Path) -> None:
    rejected = _rejected_copy(tiny, tmp_path / "dist", REJECTED_PARITY)
    with pytest.warns(UserWarning, match=r"model.int8.onnx.rejected is a rejected export.*top1_agreement = 0.9 "
                                         r"\(needs >= 0.98\)"):  # fmt: skip
        Classifier(rejected)
    bare = _rejected_copy(tiny, tmp_path / "bare", None)
    with pytest.warns(UserWarning, match="no parity.json beside it says why"):
        Classifier(bare)


def test_the_python_api_refuses_an_empty_array_and_names_topk(tmp_path):
    from coreg_edge.runtime.image import to_pil

    with pytest.raises(UserError, match="empty"):
        to_pil(np.zeros((0, 0, 3), np.uint8))
    from coreg_edge.runtime.classifier import Classifier

    with pytest.raises(UserError, match=r"^topk=0: must be a whole number >= 1"):
        Classifier.top(object.__new__(Classifier), np.zeros((1, 2)), topk=0)
