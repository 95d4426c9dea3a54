"""Backbones the product trains export with a dynamic batch and match PyTorch (random weights are enough)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize(
    ("backbone", "size"),
    [
        ("resnet18", 16),
        ("resnet10t", 16),
        ("lcnet_050", 32),
    ],  # plain and deep small-input stems, a mobile net
)
def test_backbone_exports_and_matches_pytorch(backbone, size, tmp_path):
    import onnxruntime as ort
    import torch

    from coreg_edge.exporters.onnx_export import to_onnx
    from coreg_edge.models import create_network

    torch.manual_seed(0)
    net = create_network(backbone, 10, image_size=size).eval()
    path = tmp_path / "model.onnx"
    assert to_onnx(net, path, (3, size, size)) == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        (got,) = session.run(["logits"], {"images": x})
        assert np.abs(got - expected).max() <= 1e-4


def test_dynamo_exporter_also_works(tmp_path):
    import onnxruntime as ort
    import torch

    from coreg_edge.exporters.onnx_export import to_onnx
    from coreg_edge.models import create_network

    torch.manual_seed(0)
    net = create_network("test_resnet", 10, image_size=16).eval()
    path = tmp_path / "model.onnx"
    assert to_onnx(net, path, (3, 16, 16), dynamo=True) == 18
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(["logits"], {"images": x})[0] - expected).max() <= 1e-4
