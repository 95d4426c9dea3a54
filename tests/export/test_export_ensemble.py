"""`--peer ensemble`: one graph whose logits are the mean of the two peers' PyTorch logits."""

from __future__ import annotations

import json

import numpy as np


def test_ensemble_graph_is_the_mean_of_the_peers(trained_run, runner, cli, tmp_path):
    import torch

    from coreg_edge.data import open_source
    from coreg_edge.runtime import Classifier
    from coreg_edge.training import run_folder

    out = tmp_path / "dist"
    result = runner.invoke(
        cli, ["export", str(trained_run), "--out", str(out), "--peer", "ensemble", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "parity.json").read_text())["peer"] == "ensemble"

    classifier = Classifier(out / "model.onnx")
    assert classifier.metadata["peer"] == "ensemble"
    source = open_source("digits:test")
    batch = classifier.preprocess([source.load(i) for i in range(48)])
    with torch.no_grad():
        x = torch.from_numpy(batch)
        peers = [run_folder.load_network(trained_run, peer)(x).numpy() for peer in ("a", "b")]
    mean = (peers[0] + peers[1]) / 2
    assert np.abs(classifier.logits(batch) - mean).max() <= 1e-4
    assert np.abs(peers[0] - peers[1]).max() > 1e-2  # the peers really differ
