"""One Co-Reg step's algorithm calls chained together, on every available device: results stay there."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coreg_edge.algorithm import (
    ContrastiveQueue,
    CoRegConfig,
    LossHistory,
    PredictionTable,
    PrototypeBank,
    align_distribution,
    co_pseudo_labels_p,
    co_pseudo_labels_u,
    division_losses,
    fit_two_component_gmm,
    mixup,
    noisy_supcon_loss,
    prototype_loss,
    restrict_to_candidates,
    safe_partition,
    sample_mixup_lambda,
    sample_permutation,
    self_training_loss,
    total_loss,
    warmup_loss,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_one_step_stays_on_the_input_device(device):
    n, c, d, b = 12, 3, 4, 4
    gen = torch.Generator().manual_seed(0)
    candidates = (torch.rand(n, c, generator=gen) < 0.5).to(device)
    candidates[:, 0] = True
    logits = torch.randn(n, c, generator=gen).to(device).requires_grad_()
    assert warmup_loss(logits, candidates).device.type == device

    cfg = CoRegConfig(queue_size=8)
    sched = cfg.resolve(epochs=6, warmup_epochs=2)
    table = PredictionTable(n, c, device=device)
    probs = logits.detach().softmax(-1)
    table.update(torch.arange(n, device=device), probs)
    aligned = align_distribution(probs, table.mean())
    history = LossHistory(n, device=device)
    history.push(division_losses(aligned, candidates))
    w = fit_two_component_gmm(history.mean())
    in_p = safe_partition(w, min_count=b)
    assert w.device.type == device and in_p.device.type == device

    idx_p, idx_u = in_p.nonzero().squeeze(1)[:b], (~in_p).nonzero().squeeze(1)[:b]
    peer = restrict_to_candidates(aligned[idx_p], candidates[idx_p])
    targets_p = co_pseudo_labels_p(w[idx_p], peer, [probs[idx_p], probs[idx_p]], cfg.sharpen_temperature)
    targets_u = co_pseudo_labels_u([probs[idx_u]] * 4, cfg.sharpen_temperature)

    lam = sample_mixup_lambda(cfg.mixup_alpha, np.random.default_rng(0))
    inputs = torch.randn(len(idx_p) + len(idx_u), d, generator=gen).to(device)
    all_targets = torch.cat([targets_p, targets_u])
    mixed = mixup(inputs, all_targets, lam, sample_permutation(inputs.shape[0], gen, device))
    head = torch.nn.Linear(d, c).to(device)
    proj = torch.nn.Linear(d, d).to(device)
    out = head(mixed.inputs)
    k = len(idx_p)
    l_cr = self_training_loss(out[:k], mixed.targets[:k], out[k:], mixed.targets[k:], sched.lambda_u(3.5))

    bank = PrototypeBank(c, d, device=device)
    z = F.normalize(proj(mixed.inputs), dim=1)
    bank.update(z[:k].detach(), targets_p.argmax(-1), cfg.proto_momentum)
    sim = bank.similarity_logits(z, cfg.proto_temperature)
    l_prot = prototype_loss(
        sim[:k],
        mixed.targets_a[:k],
        mixed.targets_b[:k],
        lam,
        sim[k:],
        mixed.targets_a[k:],
        mixed.targets_b[k:],
    )

    queue = ContrastiveQueue(cfg.queue_size, d, c, device=device)
    queries = F.normalize(proj(inputs), dim=1)
    keys = F.normalize(torch.randn_like(queries), dim=1)
    batch_in_p = torch.cat([torch.ones(k, dtype=torch.bool), torch.zeros(len(idx_u), dtype=torch.bool)]).to(
        device
    )
    queue.enqueue(keys, all_targets, batch_in_p)
    l_cont = noisy_supcon_loss(
        queries, keys, all_targets.argmax(-1), batch_in_p, queue, cfg.contrastive_temperature
    )
    loss = total_loss(l_cr, l_prot, l_cont, sched.loss_start_epoch, sched)
    assert loss.device.type == device and torch.isfinite(loss)
    loss.backward()
    assert head.weight.grad is not None and proj.weight.grad is not None
