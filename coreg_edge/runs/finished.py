"""FinishedRun: what every reader of a trained run folder needs, loaded once and in one place."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from coreg_edge.choices import EXPORT_PEERS
from coreg_edge.data import ImageSource
from coreg_edge.errors import UserError
from coreg_edge.runtime.preprocess import PreprocessConfig
from coreg_edge.runtime.spec import ModelSpec
from coreg_edge.training import run_folder as rf
from coreg_edge.training.image_store import decode_to_memory
from coreg_edge.training.views import ViewConfig, Views
from coreg_edge.utils import progress, resolve_device


class PeerEnsemble(nn.Module):
    """The mean of the peers' logits, in one graph (same argmax as the paper's sum)."""

    def __init__(self, peers: Sequence[nn.Module]):
        super().__init__()
        self.peers = nn.ModuleList(peers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = self.peers[0](images)
        for peer in self.peers[1:]:
            total = total + peer(images)
        return total / len(self.peers)


class FinishedRun:
    """A run folder `train` wrote. The config is read on opening (a folder that is no run is refused at
    once); the selection, the preprocessing and each network when first asked, so a reader that needs only
    peer a of a run still training meets the same one-line advice as before (wait, or resume)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.config: dict[str, Any] = rf.read_config(self.path)
        self._networks: dict[str, nn.Module] = {}

    def __repr__(self) -> str:
        return f"FinishedRun({str(self.path)!r})"

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @cached_property
    def selection(self) -> dict[str, Any]:
        """RUN/selection.json (a one-line error, with advice, while the run has not finished)."""
        return rf.read_selection(self.path)

    @cached_property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing training evaluated with (export writes it into the ONNX metadata)."""
        return PreprocessConfig.from_metadata(self.config["preprocess"])

    def resolve_peer(self, peer: str) -> str:
        """`selected` -> the peer selection.json names; a, b and ensemble pass through (checked)."""
        if peer not in EXPORT_PEERS:
            raise UserError(f"--peer must be one of {', '.join(EXPORT_PEERS)} (got {peer!r})")
        if peer != "selected":
            return peer
        chosen = self.selection.get("selected")
        if chosen not in rf.PEERS:
            raise UserError(f"{self.path / rf.SELECTION}: 'selected' is {chosen!r}, not a or b")
        return chosen

    def network(self, peer: str) -> nn.Module:
        """The network(s) behind a peer name (`selected` resolved), in eval mode on the CPU; loaded once."""
        resolved = self.resolve_peer(peer)
        if resolved not in self._networks:
            self._networks[resolved] = self._load(resolved)
        return self._networks[resolved]

    def _load(self, peer: str) -> nn.Module:
        if peer == "ensemble":
            missing = [p for p in rf.PEERS if not rf.peer_file(self.path, p).exists()]
            if missing:
                raise UserError(
                    f"{self.path}: --peer ensemble needs both peers, but there are no weights for peer "
                    f"{' or '.join(missing)} ({rf.peer_file(self.path, missing[0]).name}); use --peer a instead"
                )
            return PeerEnsemble([rf.load_network(self.path, p) for p in rf.PEERS]).eval()
        return rf.load_network(self.path, peer).eval()

    def spec(self, peer: str) -> ModelSpec:
        """What an exported file of this network says of itself (its `coreg_edge` metadata, less what export
        adds): class names, preprocessing, backbone, method, peer, annotator, the reject threshold."""
        resolved = self.resolve_peer(peer)
        info = {"backbone": self.config["network"]["backbone"], "method": self.config.get("method"), "peer": resolved,
                "annotator": self.config.get("annotator"), "test_accuracy": None,
                "reject_threshold": self.reject_threshold(resolved)}  # fmt: skip
        return ModelSpec(tuple(self.class_names), self.preprocess, info)

    def reject_threshold(self, peer: str) -> float | None:
        """The calibrated "none of these" threshold of a resolved peer (selection.json), or None."""
        value = (self.selection.get("reject_threshold") or {}).get(peer)
        return float(value) if isinstance(value, (int, float)) else None

    def probabilities(
        self, source: ImageSource, indices: np.ndarray, *, peer: str = "selected", batch_size: int = 64,
        device: str = "auto", quiet: bool = False, desc: str = "labelling",
    ) -> np.ndarray:  # fmt: skip
        """(len(indices), C) softmax of the network `peer` on those items' evaluation view (the run's
        preprocessing, no flip), decoded as training decoded them."""
        module = self.network(peer)
        where = torch.device(resolve_device(device))
        module.to(where)
        pre = self.preprocess
        views = Views(ViewConfig.of(pre, flip=False))
        probs = []
        with torch.no_grad():
            starts = range(0, len(indices), batch_size)
            for start in progress(starts, desc=desc, quiet=quiet, total=len(starts)):
                batch = decode_to_memory(source, indices[start : start + batch_size], pre, quiet=True)
                probs.append(module(views.eval(batch.to(where))).float().softmax(1).cpu())
        return torch.cat(probs).numpy() if probs else np.zeros((0, len(self.class_names)), np.float32)
