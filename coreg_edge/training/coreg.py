"""Co-Reg epochs (docs/ALGORITHM.md sections 4-5): warm-up, division, co-pseudo-labels, MixUp self-training,
shared prototypes and the noisy supervised contrastive loss, wired to batches of the training set.

Passes per Co-Reg step of network k with B items from P and B from U (the cost benchmark explains them):
  no grad: own net on 2 weak views of P and U (4B; also gives the prototype-update projections),
           the peer (eval mode) on 2 weak views of U (2B), the key encoder on strong view 2 (2B, fills the queue);
  grad:    one forward of the MixUp batch (4B) for L_cr and L_prot, joined by strong view 1 (2B, the
           contrastive queries) once L_cont is on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from coreg_edge.algorithm import (
    CoRegConfig,
    PrototypeBank,
    align_distribution,
    co_pseudo_labels_p,
    co_pseudo_labels_u,
    copy_parameters,
    detect_collapse,
    division_losses,
    fit_two_component_gmm,
    min_max_normalise,
    mixup,
    momentum_update,
    noisy_supcon_loss,
    prototype_loss,
    restrict_to_candidates,
    safe_partition,
    sample_mixup_lambda,
    self_training_loss,
    total_loss,
    warmup_loss,
)
from coreg_edge.algorithm.schedule import CoRegSchedule
from coreg_edge.training.context import Context, Diverged, Peer


def set_lr(peer: Peer, lr: float) -> None:
    """The schedule's lr for the heads; each param group gets lr x its `lr_scale` (a pretrained backbone's
    is `backbone_lr_scale`, 0.1 by default: backbones.param_groups). Groups without one take lr itself."""
    for group in peer.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def warmup_epoch(ctx: Context, peer: Peer, epoch: int, config: CoRegConfig, train_rows: torch.Tensor) -> dict:
    """Partial CE + negative entropy, batch 2x (reference code), one network; views per `warmup_view`."""
    peer.net.train()
    view = ctx.views.strong if config.warmup_view == "strong" else ctx.views.weak
    sums, watch, steps = ctx.sums(), ctx.watch(epoch, f"peer {peer.name} warm-up"), 0
    for step, batch in enumerate(ctx.batches(train_rows, 2 * ctx.batch_size, min_size=2)):
        mine = ctx.local(batch)  # this rank's slice (the whole batch in one process)
        images = ctx.fetch(mine)
        candidates = ctx.candidates[mine.to(ctx.device)]
        with ctx.autocast():
            logits = peer.logits(view(images)).float()
        loss = warmup_loss(logits, candidates, config.warmup_entropy_weight, config.warmup_eps)
        watch.add(loss, step)
        peer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        peer.optimizer.step()
        peer.table.update(batch.to(ctx.device), ctx.gather(logits.detach().softmax(1), len(batch)))
        sums.add("warmup", loss)
        steps += 1
    watch.check()
    ctx.group.average_buffers(peer.net)
    return {"warmup": sums.read().get("warmup", 0.0) / max(steps, 1)}


@dataclass
class Division:
    """One network's split of the training items (spec 5.1), used by its PEER to train."""

    w: torch.Tensor  # (N,) posterior of the clean component
    in_p: torch.Tensor  # (N,) bool
    restricted: torch.Tensor  # (N, C) aligned predictions restricted to the candidate sets
    predictions: torch.Tensor  # (N,) argmax of the raw predictions


@torch.no_grad()
def divide_items(
    ctx: Context, peer: Peer, config: CoRegConfig, train_rows: torch.Tensor, prior: torch.Tensor | None
) -> Division:
    """Eval-mode weak-view predictions -> aligned -> per-item loss -> 5-epoch mean -> GMM -> P / U.

    Only `train_rows` take part: the held-out rows neither shift the alignment mean nor the min-max
    normalisation of the losses. As in the reference code, each batch is written to the prediction table
    and then aligned with the table's current mean. Under torchrun each rank predicts its slice of every
    batch and all ranks make the same division from all the predictions (rank 0's result is kept bit for bit
    everywhere: ranks on other CPUs could round the GMM differently).
    """
    peer.net.eval()
    n, c = ctx.num_items, ctx.num_classes
    probs = torch.full((n, c), 1.0 / c, device=ctx.device)
    aligned = probs.clone()
    rows = train_rows.to(ctx.device)
    finite = torch.ones((), dtype=torch.bool, device=ctx.device)
    peer.table.track(rows)  # the mean over the training rows as a running sum: O(C) per batch, not O(N x C)
    for start in range(0, len(rows), 4 * ctx.batch_size):
        batch = rows[start : start + 4 * ctx.batch_size]
        with ctx.autocast():
            logits = peer.logits(ctx.views.weak(ctx.fetch(ctx.local(batch)))).float()
        finite &= torch.isfinite(logits).all()  # read once, below: no host sync per batch
        probs[batch] = ctx.gather(logits.softmax(1), len(batch))
        peer.table.update(batch, probs[batch])
        if config.distribution_alignment:
            aligned[batch] = align_distribution(probs[batch], peer.table.tracked_mean(), prior)
        else:
            aligned[batch] = probs[batch]
    if ctx.group.active:  # one verdict for all ranks
        finite = ctx.group.sum_((~finite).to(torch.int32).reshape(1)) == 0
    if not bool(finite):  # before the GMM, which would fail on NaN with its own error
        raise Diverged(f"peer {peer.name}'s predictions became non-finite before the division")
    losses = torch.zeros(n, device=ctx.device)
    losses[rows] = min_max_normalise(division_losses(aligned[rows], ctx.candidates[rows]))
    peer.history.push(losses, normalise=False)
    w = torch.zeros(n, device=ctx.device)
    w[rows] = fit_two_component_gmm(
        peer.history.mean()[rows], config.gmm_max_iter, config.gmm_tol, config.gmm_reg_covar
    ).to(ctx.device)
    in_p = torch.zeros(n, dtype=torch.bool, device=ctx.device)
    in_p[rows] = safe_partition(w[rows], config.p_threshold, config.min_p_share)
    division = Division(w, in_p, restrict_to_candidates(aligned, ctx.candidates), probs.argmax(1))
    ctx.group.broadcast_(division.w, division.in_p, division.restricted, division.predictions)
    return division


def coreg_epoch(
    ctx: Context,
    peer: Peer,
    other: Peer,
    division: Division,
    epoch: int,
    config: CoRegConfig,
    schedule: CoRegSchedule,
    bank: PrototypeBank,
    train_rows: torch.Tensor,
) -> dict[str, Any]:
    """Train `peer` for one epoch on the split its partner made (`division` comes from `other`)."""
    rows_p = train_rows[division.in_p.cpu()[train_rows]]
    rows_u = train_rows[~division.in_p.cpu()[train_rows]]
    b = ctx.batch_size
    iterations = max(1, -(-len(rows_p) // b))
    copy_parameters(peer.key_net, peer.net)  # re-copied at the start of every post-warm-up epoch
    use_repr = schedule.representation_losses_active(epoch)
    u_batches = _cycle(ctx, rows_u, b)
    stats = _EpochStats(ctx)
    watch = ctx.watch(epoch, f"peer {peer.name} Co-Reg")
    peer.net.train()
    other.net.eval()  # the partner only predicts (reference: net2.eval()); its BatchNorm statistics stay its own
    # With U empty a step's batches are P's alone, and the key encoder (train mode) would get one image.
    for step, batch_p in enumerate(ctx.batches(rows_p, b, min_size=1 if len(rows_u) else 2)):
        batch_u = next(u_batches) if len(rows_u) else batch_p[:0]
        mine_p, mine_u = ctx.local(batch_p), ctx.local(batch_u)  # this rank's slices of the global batches
        idx_p = mine_p.to(ctx.device)
        img_p, img_u = ctx.fetch(mine_p), ctx.fetch(mine_u)
        n_p = len(idx_p)

        targets = _co_pseudo_targets(ctx, peer, other, division, idx_p, img_p, img_u, config)
        # The MixUp forward normalises with its own batch statistics, which never reach the running ones
        # (mixup_bn_frozen): they are restored after the backward, which still needs the forward's buffers.
        bn_guard = frozen_bn_statistics(peer.net) if config.mixup_bn_frozen else contextlib.nullcontext()
        with bn_guard:
            fwd = _mixup_forward(ctx, peer, img_p, img_u, targets, config, use_repr)
            lam_u = schedule.lambda_u(epoch + step / iterations)
            m = fwd.num_inputs
            l_cr = self_training_loss(
                fwd.logits[: 2 * n_p], fwd.mixed.targets[: 2 * n_p], fwd.logits[2 * n_p : m], fwd.mixed.targets[2 * n_p : m],
                lam_u,
            )  # fmt: skip
            # Prototypes and queue are updated from the first post-warm-up epoch; their losses start later.
            keys, query_in_p = _update_memories(ctx, peer, bank, targets, fwd.strong_2, config, len(batch_p))
            l_prot = l_cont = None
            if use_repr:
                l_prot, l_cont = _representation_losses(peer, bank, fwd, targets, keys, query_in_p, config)
            loss = total_loss(l_cr, l_prot, l_cont, epoch, schedule)
            watch.add(loss, step)
            peer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            peer.optimizer.step()
        peer.queue.enqueue(*_all_keys(ctx, keys, targets, query_in_p, len(batch_p), len(batch_u)))
        stats.add(l_cr, l_prot, l_cont, loss, targets.p.argmax(1), ctx.labels[idx_p])
    watch.check()
    ctx.group.average_buffers(peer.net)

    weights = schedule.loss_weights(epoch)
    result: dict[str, Any] = stats.means(max(1, iterations))
    result["weights"] = {
        "lambda_u": schedule.lambda_u(epoch),
        "prot": weights.prototype,
        "cont": weights.contrastive,
    }
    result["p_share"] = len(rows_p) / max(1, len(train_rows))
    result["pseudo_label_accuracy"] = stats.pseudo_label_accuracy()
    result["p_collapse"] = (
        detect_collapse(division.restricted[division.in_p].argmax(1), ctx.num_classes)
        if len(rows_p)
        else None
    )
    return result


@dataclass
class _Targets:
    """Sharpened co-pseudo-labels of a step's P and U items, and P's weak-view projections."""

    p: torch.Tensor  # (n_p, C)
    u: torch.Tensor  # (n_u, C)
    proto_z: torch.Tensor  # (n_p, D): updates the prototype bank


@torch.no_grad()
def _co_pseudo_targets(
    ctx: Context, peer: Peer, other: Peer, division: Division, idx_p: torch.Tensor, img_p: torch.Tensor,
    img_u: torch.Tensor, config: CoRegConfig,
) -> _Targets:  # fmt: skip
    """Spec 5.2: own predictions on two weak views of P and U, the partner's on U only (P's come from the
    division)."""
    n_p, n_u = len(img_p), len(img_u)
    with ctx.autocast():
        weak = torch.cat(
            [ctx.views.weak(img_p), ctx.views.weak(img_p), ctx.views.weak(img_u), ctx.views.weak(img_u)]
        )
        own_logits, own_z = peer.forward_train(weak)
        own = own_logits.float().softmax(1)
        own_p1, own_p2 = own[:n_p], own[n_p : 2 * n_p]
        own_u1, own_u2 = own[2 * n_p : 2 * n_p + n_u], own[2 * n_p + n_u :]
        peer_u = other.logits(weak[2 * n_p :]).float().softmax(1) if n_u else None
        targets_p = co_pseudo_labels_p(
            division.w[idx_p], division.restricted[idx_p], [own_p1, own_p2], config.sharpen_temperature
        )
        if peer_u is not None:
            targets_u = co_pseudo_labels_u(
                [own_u1, own_u2, peer_u[:n_u], peer_u[n_u:]], config.sharpen_temperature
            )
        else:
            targets_u = targets_p[:0]
    return _Targets(targets_p, targets_u, own_z[:n_p].float())


@dataclass
class _Forward:
    """The one gradient forward of a step: MixUp batch (+ the contrastive queries once L_cont is on)."""

    logits: torch.Tensor
    z: torch.Tensor
    mixed: Any  # algorithm.MixupBatch
    lam: float
    strong_2: torch.Tensor  # the key encoder's input
    num_inputs: int  # rows of the MixUp batch; rows after it are the queries


def _mixup_forward(
    ctx: Context, peer: Peer, img_p: torch.Tensor, img_u: torch.Tensor, targets: _Targets, config: CoRegConfig,
    use_repr: bool,
) -> _Forward:  # fmt: skip
    """MixUp over [P view1, P view2, U view1, U view2] of strong views (spec 5.3), one forward."""
    n_p = len(img_p)
    strong_1 = torch.cat([ctx.views.strong(img_p), ctx.views.strong(img_u)])
    strong_2 = torch.cat([ctx.views.strong(img_p), ctx.views.strong(img_u)])
    inputs = torch.cat([strong_1[:n_p], strong_2[:n_p], strong_1[n_p:], strong_2[n_p:]])
    labels = torch.cat([targets.p, targets.p, targets.u, targets.u])
    lam = sample_mixup_lambda(config.mixup_alpha, ctx.rng)
    perm = torch.randperm(len(inputs), generator=ctx.step_generator).to(ctx.device)
    mixed = mixup(inputs, labels, lam, perm)
    # The unmixed strong view 1 (contrastive queries) joins the same forward only once L_cont is on.
    with ctx.autocast():
        logits, z = peer.forward_train(torch.cat([mixed.inputs, strong_1]) if use_repr else mixed.inputs)
    return _Forward(logits.float(), z.float(), mixed, lam, strong_2, len(inputs))


def _update_memories(
    ctx: Context,
    peer: Peer,
    bank: PrototypeBank,
    targets: _Targets,
    strong_2: torch.Tensor,
    config: CoRegConfig,
    global_p: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototype bank (from all ranks' P weak projections: one bank everywhere), key encoder momentum step,
    keys of this rank's strong view 2. Returns (keys, which keys come from P)."""
    bank.update(ctx.gather(targets.proto_z, global_p), ctx.gather(targets.p.argmax(1), global_p),
                config.proto_momentum)  # fmt: skip
    momentum_update(peer.key_net, peer.net, config.key_momentum)
    with torch.no_grad(), ctx.autocast():
        keys = peer.key_net(strong_2, with_projection=True)[1].float()
    n_p, n_u = len(targets.p), len(targets.u)
    in_p = torch.cat([torch.ones(n_p, dtype=torch.bool), torch.zeros(n_u, dtype=torch.bool)]).to(keys.device)
    return keys, in_p


def _all_keys(
    ctx: Context, keys: torch.Tensor, targets: _Targets, in_p: torch.Tensor, global_p: int, global_u: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the queue takes from a step: every rank's keys, targets and P flags (P's first, then U's), so
    that every rank's queue stays the same. One process: this step's own."""
    if not ctx.group.active:
        return keys, torch.cat([targets.p, targets.u]), in_p
    n_p = len(targets.p)
    all_p, all_u = ctx.gather(keys[:n_p], global_p), ctx.gather(keys[n_p:], global_u)
    labels = torch.cat([ctx.gather(targets.p, global_p), ctx.gather(targets.u, global_u)])
    flags = torch.cat([torch.ones(len(all_p), dtype=torch.bool), torch.zeros(len(all_u), dtype=torch.bool)])
    return torch.cat([all_p, all_u]), labels, flags.to(keys.device)


def _representation_losses(
    peer: Peer, bank: PrototypeBank, fwd: _Forward, targets: _Targets, keys: torch.Tensor, query_in_p: torch.Tensor,
    config: CoRegConfig,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """L_prot on the MixUp rows (spec 5.4) and the noisy SupCon loss on the query rows (spec 5.5)."""
    n_p, m, mixed = len(targets.p), fwd.num_inputs, fwd.mixed
    sim = bank.similarity_logits(fwd.z[:m], config.proto_temperature)
    l_prot = prototype_loss(
        sim[: 2 * n_p], mixed.targets_a[: 2 * n_p], mixed.targets_b[: 2 * n_p], fwd.lam,
        sim[2 * n_p :], mixed.targets_a[2 * n_p :], mixed.targets_b[2 * n_p :], config.proto_u_weight,
    )  # fmt: skip
    query_labels = torch.cat([targets.p.argmax(1), targets.u.argmax(1)])
    l_cont = noisy_supcon_loss(
        fwd.z[m:], keys, query_labels, query_in_p, peer.queue, config.contrastive_temperature
    )
    return l_prot, l_cont


class _EpochStats:
    """Per-epoch sums of the loss terms and the pseudo-label hits on P (where ground truth exists), on the
    device (EpochSums): read once, after the epoch."""

    def __init__(self, ctx: Context) -> None:
        self.sums = ctx.sums()
        self._read: dict[str, float] | None = None

    def add(self, l_cr, l_prot, l_cont, loss, labels_p: torch.Tensor, truth: torch.Tensor) -> None:
        for key, value in (("cr", l_cr), ("prot", l_prot), ("cont", l_cont), ("total", loss)):
            self.sums.add(key, value)
        known = truth >= 0
        self.sums.add("hits", ((labels_p == truth) & known).sum())
        self.sums.add("known", known.sum())

    def _values(self) -> dict[str, float]:
        if self._read is None:
            self._read = self.sums.read()
        return self._read

    def means(self, steps: int) -> dict[str, Any]:
        values = self._values()
        return {k: values.get(k, 0.0) / steps for k in ("cr", "prot", "cont", "total")}

    def pseudo_label_accuracy(self) -> float | None:
        values = self._values()
        return values["hits"] / values["known"] if values.get("known") else None


@contextlib.contextmanager
def frozen_bn_statistics(net: torch.nn.Module):
    """Normalise with batch statistics but leave the running statistics as they were.

    The running mean and variance are copied before and copied back in place at the end, instead of setting
    `momentum` to 0: changing a module attribute would make torch.compile guard on it and recompile. Put the
    backward inside the block too (autograd checks that the forward's saved buffers were not changed).
    `num_batches_tracked` counts on, as it did with momentum 0. The result is the same as momentum 0
    (1 x running + 0 x batch) for finite batch statistics.
    """
    norms = [
        m for m in net.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]  # fmt: skip
    with torch.no_grad():
        saved = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var) in zip(norms, saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)


def _cycle(ctx: Context, rows: torch.Tensor, batch_size: int):
    """U batches, reshuffled whenever exhausted (the U loader is cycled to match P's length)."""
    while len(rows):
        yield from ctx.batches(rows, batch_size)
