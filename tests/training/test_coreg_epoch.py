"""One division and one Co-Reg epoch on a tiny random problem: what each step may and may not touch."""

import dataclasses

import numpy as np
import pytest
import torch

from coreg_edge.algorithm import CoRegConfig, PrototypeBank
from coreg_edge.models import NetworkConfig
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training.context import Context
from coreg_edge.training.coreg import coreg_epoch, divide_items
from coreg_edge.training.image_store import MemoryStore
from coreg_edge.training.trainer import _build_peer
from coreg_edge.training.views import ViewConfig, Views

N, C, SIZE = 48, 4, 8


def _setup():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8)
    labels = torch.arange(N) % C
    candidates = torch.zeros(N, C, dtype=torch.bool)
    candidates[torch.arange(N), labels] = True
    candidates[torch.arange(N), (labels + 1) % C] = True
    config = CoRegConfig(lr=0.01, queue_size=64, proj_dim=16, proj_hidden=32, min_p_share=0.5)
    settings = TrainSettings(backbone="test_resnet", batch_size=8, coreg=config, compile="off")
    net_config = NetworkConfig(
        backbone="test_resnet", num_classes=C, in_chans=3, image_size=SIZE, proj_hidden=32, proj_dim=16
    )
    peers = [
        _build_peer(name, net_config, settings, torch.device("cpu"), N, C, i, False)
        for i, name in enumerate("ab")
    ]
    views = Views(ViewConfig(SIZE, 3, (0.5,) * 3, (0.5,) * 3, flip=False, strong="weak"), seed=0)
    ctx = Context(
        device=torch.device("cpu"), store=MemoryStore(images), candidates=candidates, labels=labels, top1=labels,
        views=views, batch_size=8, generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0),
    )  # fmt: skip
    return ctx, peers, config


def _bn_stats(net: torch.nn.Module) -> list[torch.Tensor]:
    return [
        b.clone()
        for m in net.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for b in (m.running_mean, m.running_var)
    ]


def test_division_ignores_held_out_rows():
    ctx, (a, _), config = _setup()
    train_rows = torch.arange(8, N)  # rows 0..7 are held out
    division = divide_items(ctx, a, config, train_rows, prior=None)
    held = torch.arange(8)
    assert not division.in_p[held].any()
    assert division.in_p[train_rows].float().mean() >= 0.5  # the min_p_share floor
    # Min-max normalised over the training rows only: their losses span exactly [0, 1].
    losses = a.history.mean()
    assert float(losses[train_rows].min()) == 0.0 and float(losses[train_rows].max()) == pytest.approx(1.0)
    assert torch.all(losses[held] == 0)
    # Held-out rows of the prediction table are never written.
    assert torch.allclose(a.table.table[held], torch.full((8, C), 1.0 / C))


def test_coreg_epoch_trains_the_peer_and_leaves_the_partner_untouched():
    ctx, (a, b), config = _setup()
    rows = torch.arange(N)
    schedule = config.resolve(epochs=4, warmup_epochs=1)
    division_b = divide_items(ctx, b, config, rows, prior=None)
    bank = PrototypeBank(C, config.proj_dim)
    a_before = [p.detach().clone() for p in a.net.parameters()]
    b_params = [p.detach().clone() for p in b.net.parameters()]
    b_stats = _bn_stats(b.net)
    result = coreg_epoch(ctx, a, b, division_b, 2, config, schedule, bank, rows)
    assert np.isfinite(result["total"]) and 0.5 <= result["p_share"] <= 1.0
    assert any(not torch.equal(x, y) for x, y in zip(a_before, a.net.parameters(), strict=True))
    # The partner only predicts: neither its weights nor its BatchNorm running statistics move.
    assert all(torch.equal(x, y) for x, y in zip(b_params, b.net.parameters(), strict=True))
    assert all(torch.equal(x, y) for x, y in zip(b_stats, _bn_stats(b.net), strict=True))
    assert float(bank.prototypes.abs().sum()) > 0 and len(a.queue) > 0


def test_a_coreg_epoch_with_every_item_in_p_makes_no_batch_of_one():
    """U empty and |P| % batch == 1: the last step would feed one image to the key encoder, which runs in
    train mode (BatchNorm: 'Expected more than 1 value per channel'); it joins the batch before it."""
    ctx, (a, b), config = _setup()
    rows = torch.arange(41)  # batch 8: five batches of 8, then one of 1
    division = divide_items(ctx, b, config, rows, prior=None)
    everything = dataclasses.replace(division, in_p=torch.ones_like(division.in_p))
    schedule = config.resolve(epochs=4, warmup_epochs=1)
    result = coreg_epoch(ctx, a, b, everything, 2, config, schedule, PrototypeBank(C, config.proj_dim), rows)
    assert result["p_share"] == 1.0 and np.isfinite(result["total"])
