"""Small wiring pieces of the Co-Reg trainer."""

import torch

from coreg_edge.training.coreg import frozen_bn_statistics


def test_frozen_bn_statistics_normalises_by_batch_but_keeps_running_stats():
    bn = torch.nn.BatchNorm2d(2)
    net = torch.nn.Sequential(bn).train()
    x = torch.randn(8, 2, 3, 3) * 3 + 5
    with frozen_bn_statistics(net):
        out = net(x)
    assert torch.equal(bn.running_mean, torch.zeros(2)) and torch.equal(bn.running_var, torch.ones(2))
    assert abs(float(out.detach().mean())) < 1e-5  # batch statistics were used
    assert bn.momentum == 0.1  # restored
    net(x)
    assert float(bn.running_mean.abs().sum()) > 0  # outside the guard, statistics move again
