import math

import pytest
import torch
import torch.nn.functional as F

from coreg_edge.algorithm import PrototypeBank, prototype_loss


def test_prototype_update_by_hand():
    bank = PrototypeBank(num_classes=3, dim=2)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    bank.update(z, torch.tensor([0, 0, 1]), momentum=0.5)
    # class 0: (0.5, 0) then 0.5 * (0.5, 0) + 0.5 * (0, 1) = (0.25, 0.5) -> / 0.5590170
    # class 1: (0, 0.5) -> (0, 1); class 2: untouched zeros
    assert bank.prototypes.tolist() == [
        pytest.approx([0.4472136, 0.8944272]),
        [0.0, 1.0],
        [0.0, 0.0],
    ]
    bank.update(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), momentum=0.5)
    # class 1: 0.5 * (0, 1) + 0.5 * (1, 0) -> (0.7071068, 0.7071068); class 0 already unit length
    assert bank.prototypes[1].tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(0.5)])
    assert bank.prototypes[0].tolist() == pytest.approx([0.4472136, 0.8944272])


def test_vectorised_update_matches_one_sample_at_a_time():
    generator = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(64, 8, generator=generator), dim=1)
    labels = torch.randint(0, 5, (64,), generator=generator)
    start = F.normalize(torch.randn(5, 8, generator=generator), dim=1)
    bank = PrototypeBank(5, 8)
    bank.prototypes.copy_(start)
    bank.update(z, labels, momentum=0.9)
    expected = start.clone()
    for feature, label in zip(z, labels, strict=True):  # the reference code's loop
        expected[label] = 0.9 * expected[label] + 0.1 * feature
    expected = F.normalize(expected, dim=1)
    assert torch.allclose(bank.prototypes, expected, atol=1e-6)


def test_similarity_and_state_dict():
    bank = PrototypeBank(2, 2)
    bank.prototypes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    z = torch.tensor([[1.0, 0.0]], requires_grad=True)
    # logits (1/0.5, 0) -> softmax (e^2, 1) / (e^2 + 1)
    sim = bank.similarity(z, temperature=0.5)
    assert sim.tolist() == [pytest.approx([0.8807971, 0.1192029])]
    sim[0, 0].backward()
    assert z.grad is not None and bank.prototypes.grad is None
    other = PrototypeBank(2, 2)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.prototypes, bank.prototypes)
    with pytest.raises(ValueError):
        PrototypeBank(3, 2).load_state_dict(bank.state_dict())


def test_prototype_loss_by_hand():
    # P: s = softmax(ln 3, 0) = (0.75, 0.25) for both rows
    sim_p = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    t_a_p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t_b_p = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    # KL(t_a || s) = ln(1/0.75) = 0.2876821; KL(t_b || s) = .5 ln(.5/.75) + .5 ln(.5/.25) = 0.1438410
    # U: s = (0.5, 0.5); MSE to (1, 0) = 0.25, to (0.5, 0.5) = 0
    sim_u = torch.zeros(1, 2)
    t_a_u = torch.tensor([[1.0, 0.0]])
    t_b_u = torch.tensor([[0.5, 0.5]])
    loss = prototype_loss(sim_p, t_a_p, t_b_p, 0.75, sim_u, t_a_u, t_b_u)
    # 0.75 * 0.2876821 + 0.25 * 0.1438410 + 0.75 * 0.25 = 0.2517218 + 0.1875
    assert float(loss) == pytest.approx(0.4392218)
    only_p = prototype_loss(sim_p, t_a_p, t_b_p, 0.75, sim_u, t_a_u, t_b_u, u_weight=0.0)
    assert float(only_p) == pytest.approx(0.2517218)
    empty_u = prototype_loss(
        sim_p, t_a_p, t_b_p, 0.75, torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, 2)
    )
    assert float(empty_u) == pytest.approx(0.2517218)
