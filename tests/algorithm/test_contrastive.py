import math

import pytest
import torch

from coreg_edge.algorithm import ContrastiveQueue, contrastive_masks, noisy_supcon_loss


def parse(rows):
    """'P' positive, 'I' ignored, 'N' negative -> three bool masks."""
    return tuple(torch.tensor([[c == kind for c in row.split()] for row in rows]) for kind in "PIN")


def test_masks_element_by_element():
    # entries: q0 q1 q2 | k0 k1 k2 | e0 e1 e2 e3 e4   (e4 is an unfilled queue slot)
    labels = torch.tensor([0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0])
    in_p = torch.tensor([1, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1], dtype=torch.bool)
    valid = torch.tensor([True] * 10 + [False])
    expected = parse(
        [
            # anchor q0 in P, label 0: self I; same-label P entries (q1, k1, e0) and own key P;
            # same-label U entry e1 I; other labels N; e4 unfilled I (it would be a positive otherwise)
            "I P N P P N P I N N I",
            # anchor q1: the same, mirrored
            "P I N P P N P I N N I",
            # anchor q2 in U, label 1: only its own key k2 is positive; every other label-1 entry
            # (e2 from U, e3 from P) is ignored; all label-0 entries are negatives
            "N N I N N P N N I I I",
        ]
    )
    masks = contrastive_masks(labels, in_p, valid, num_anchors=3)
    for got, want, name in zip(masks, expected, ("positive", "ignored", "negative"), strict=True):
        assert got.tolist() == want.tolist(), name
    # a partition: every entry in exactly one set
    assert (masks.positive.int() + masks.ignored.int() + masks.negative.int()).eq(1).all()


def test_masks_u_anchor_own_key_is_positive_even_if_key_is_u():
    labels = torch.tensor([2, 2])
    in_p = torch.tensor([False, False])
    masks = contrastive_masks(labels, in_p, torch.tensor([True, True]), num_anchors=1)
    assert masks.positive.tolist() == [[False, True]] and masks.ignored.tolist() == [[True, False]]


def make_case(queue_size=4):
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)  # q0 in P label 0, q1 in U label 1
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    in_p = torch.tensor([True, False])
    queue = ContrastiveQueue(size=queue_size, dim=2, num_classes=2)
    # e0 = (1, 0) in P label 0; e1 = (-1, 0) in P label 1; remaining slots unfilled
    queue.enqueue(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.eye(2), torch.tensor([True, True]))
    return queries, keys, labels, in_p, queue


def test_noisy_supcon_loss_by_hand():
    queries, keys, labels, in_p, queue = make_case()
    # T = 1, dot products in {-1, 0, 1}.
    # anchor 0 (P, 0): positives k0 (1), e0 (1); negatives q1 (0), k1 (0), e1 (-1); self and unfilled out.
    #   Z0 = 2 + 2e + 1/e, loss0 = -(1/2)(2 (1 - ln Z0)) = ln Z0 - 1 = 1.0546932
    # anchor 1 (U, 1): positive k1 (1); negatives q0, k0, e0 (0 each); e1 (label 1) ignored.
    #   Z1 = 3 + e, loss1 = ln(3 + e) - 1 = 0.7436684
    loss = noisy_supcon_loss(queries, keys, labels, in_p, queue, temperature=1.0)
    assert loss.item() == pytest.approx((1.0546932 + 0.7436684) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(
        (math.log(2 + 2 * math.e + 1 / math.e) + math.log(3 + math.e)) / 2 - 1, abs=1e-6
    )
    # T = 0.5 doubles every logit: ln(2 + 2e^2 + e^-2) - 2 = 0.8281090, ln(3 + e^2) - 2 = 0.3407530
    loss_half = noisy_supcon_loss(queries, keys, labels, in_p, queue, temperature=0.5)
    assert loss_half.item() == pytest.approx((0.8281090 + 0.3407530) / 2, abs=1e-6)


def test_noisy_supcon_loss_unfilled_slots_do_not_count():
    queries, keys, labels, in_p, queue = make_case(queue_size=4)
    _, _, _, _, full = make_case(queue_size=2)
    assert len(queue) == 2 and len(full) == 2
    a = noisy_supcon_loss(queries, keys, labels, in_p, queue, temperature=1.0)
    b = noisy_supcon_loss(queries, keys, labels, in_p, full, temperature=1.0)
    assert a.item() == pytest.approx(b.item(), abs=1e-7)


def test_noisy_supcon_loss_without_queue_and_gradients():
    queries, keys, labels, in_p, _ = make_case()
    keys.requires_grad_(True)
    loss = noisy_supcon_loss(queries, keys, labels, in_p, queue=None, temperature=1.0)
    # anchor 0: own key k0 (1) vs negatives q1 (0), k1 (0): ln(e + 2) - 1
    # anchor 1 (U, label 1): own key k1 (1) vs negatives q0, k0 (label 0, 0 each): ln(e + 2) - 1
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)
    loss.backward()
    assert torch.isfinite(queries.grad).all() and queries.grad.abs().sum() > 0
    assert keys.grad is None  # keys come from the momentum encoder: no gradient


def test_noisy_supcon_loss_same_label_batch_entries():
    # two P anchors with the same label: each other's query and key are positives (reference code's
    # contrast set includes the current batch)
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    in_p = torch.tensor([True, True])
    loss = noisy_supcon_loss(queries, keys, labels, in_p, None, temperature=1.0)
    # anchor 0: entries q1 (0), k0 (1), k1 (0), all positive; Z = e + 2
    # loss0 = -(1/3)(0 + 1 + 0 - 3 ln(e + 2)) = ln(e + 2) - 1/3; anchor 1 symmetric
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1 / 3, abs=1e-6)
