import pytest
import torch
from torch import nn

from coreg_edge.algorithm import ContrastiveQueue, copy_parameters, momentum_update


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def test_momentum_update_moves_parameters_not_buffers():
    online, key = make_net(), make_net()
    with torch.no_grad():
        for p in online.parameters():
            p.fill_(1.0)
        for p in key.parameters():
            p.fill_(0.0)
    online[1].running_mean.fill_(5.0)
    momentum_update(key, online, momentum=0.9)
    for p in key.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.1))
    assert key[1].running_mean.tolist() == [0.0, 0.0]
    momentum_update(key, online, momentum=0.9)
    for p in key.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.19))


def test_copy_parameters_copies_and_freezes():
    online, key = make_net(), make_net()
    online[1].running_var.fill_(7.0)
    copy_parameters(key, online)
    for kp, op in zip(key.parameters(), online.parameters(), strict=True):
        assert torch.equal(kp, op) and not kp.requires_grad
    assert key[1].running_var.tolist() == [1.0, 1.0]


def test_momentum_update_rejects_mismatched_modules():
    with pytest.raises(ValueError):
        momentum_update(nn.Linear(2, 2), make_net(), 0.9)


def batch(values, in_p):
    keys = torch.tensor([[float(v), 0.0] for v in values])
    targets = torch.nn.functional.one_hot(torch.tensor(values) % 3, 3).float()
    return keys, targets, torch.tensor(in_p)


def test_queue_starts_empty_and_wraps_around():
    queue = ContrastiveQueue(size=4, dim=2, num_classes=3)
    assert len(queue) == 0 and queue.valid.tolist() == [False] * 4
    queue.enqueue(*batch([1, 2, 3], [True, False, True]))
    assert queue.ptr == 3 and queue.valid.tolist() == [True, True, True, False]
    queue.enqueue(*batch([4, 5, 6], [False, False, True]))
    # 4 goes to slot 3, then 5 and 6 overwrite the oldest slots 0 and 1
    assert queue.ptr == 2 and len(queue) == 4
    assert queue.keys[:, 0].tolist() == [5.0, 6.0, 3.0, 4.0]
    assert queue.in_p.tolist() == [False, True, True, False]
    assert queue.labels.tolist() == [2, 0, 0, 1]


def test_queue_batch_larger_than_queue_keeps_the_last_rows():
    queue = ContrastiveQueue(size=3, dim=2, num_classes=3)
    queue.enqueue(*batch([1], [True]))  # ptr 1
    queue.enqueue(*batch([10, 11, 12, 13, 14], [True] * 5))
    # as a ring: 10->1, 11->2, 12->0, 13->1, 14->2; pointer ends at (1 + 5) % 3 = 0
    assert queue.keys[:, 0].tolist() == [12.0, 13.0, 14.0] and queue.ptr == 0


def test_queue_state_dict_round_trip():
    queue = ContrastiveQueue(size=4, dim=2, num_classes=3)
    queue.enqueue(*batch([1, 2], [True, False]))
    restored = ContrastiveQueue(size=4, dim=2, num_classes=3)
    restored.load_state_dict(queue.state_dict())
    assert restored.ptr == 2 and torch.equal(restored.keys, queue.keys)
    assert torch.equal(restored.valid, queue.valid) and torch.equal(restored.in_p, queue.in_p)
    with pytest.raises(ValueError):
        ContrastiveQueue(size=5, dim=2, num_classes=3).load_state_dict(queue.state_dict())
