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
    assert bn.momentum == 0.1  # never touched (torch.compile would guard on it)
    assert int(bn.num_batches_tracked) == 1  # counts on, as with momentum 0
    net(x)
    assert float(bn.running_mean.abs().sum()) > 0  # outside the guard, statistics move again


def test_frozen_bn_statistics_equal_momentum_zero_exactly():
    """The save/restore freeze gives the same buffers and outputs as the old momentum-0 freeze."""
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).train()
    b = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).train()
    b.load_state_dict(a.state_dict())
    warm = torch.randn(16, 3, 6, 6)
    a(warm), b(warm)  # non-trivial running statistics
    x = torch.randn(8, 3, 6, 6) * 2 + 1
    with frozen_bn_statistics(a):
        out_a = a(x)
        out_a.square().mean().backward()  # the backward fits inside the block
    bn = b[1]
    bn.momentum = 0.0
    out_b = b(x)
    out_b.square().mean().backward()
    bn.momentum = 0.1
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_epoch_sums_equal_python_float_sums_and_read_once():
    from coreg_edge.training.context import EpochSums

    values = [torch.tensor(v, dtype=torch.float32) for v in (0.1, 1e-8, 3.3, -2.25, 7e5)]
    sums = EpochSums(torch.device("cpu"))
    total = 0.0
    for v in values:
        sums.add("loss", v)
        sums.add("off", None)
        total += float(v)
    assert sums.read() == {"loss": total, "off": 0.0}  # bit for bit, as the epochs kept them before


def test_the_finite_watch_names_the_first_bad_step_only_when_checked():
    import pytest

    from coreg_edge.training.context import Diverged, FiniteWatch

    watch = FiniteWatch(torch.device("cpu"), epoch=3, what="peer a Co-Reg")
    watch.add(torch.tensor(1.5), 0)
    watch.check()  # all finite: nothing
    watch.add(torch.tensor(float("inf")), 1)
    watch.add(torch.tensor(float("nan")), 2)  # later ones do not replace the first
    with pytest.raises(Diverged, match=r"^peer a Co-Reg loss became inf at epoch 3, step 1$"):
        watch.check()
