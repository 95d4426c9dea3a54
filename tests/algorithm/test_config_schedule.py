import math

import pytest
import torch

from coreg_edge.algorithm import CoRegConfig, cosine_lr, lambda_u_ramp, total_loss


def test_defaults_are_the_spec_values():
    cfg = CoRegConfig()
    # lr None: the trainer chooses it (training/auto.py); an unresolved schedule uses the spec's 0.01
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.min_lr) == (None, 0.9, 5e-4, 1e-5)
    assert cfg.resolve(10, 2).base_lr == 0.01
    assert (cfg.sharpen_temperature, cfg.mixup_alpha, cfg.lambda_u) == (0.5, 4.0, 1.0)
    assert (cfg.gmm_history, cfg.gmm_max_iter, cfg.gmm_tol, cfg.gmm_reg_covar) == (5, 10, 1e-2, 5e-4)
    assert cfg.p_threshold == 0.5
    assert (cfg.proto_momentum, cfg.proto_temperature, cfg.proto_weight) == (0.999, 0.3, 0.1)
    assert (cfg.contrastive_temperature, cfg.key_momentum, cfg.contrastive_weight) == (0.07, 0.999, 0.1)
    assert (cfg.queue_size, cfg.proj_dim, cfg.proj_hidden) == (8192, 128, 512)
    assert cfg.warmup_entropy_weight == 1.0 and cfg.warmup_eps == 1e-5
    assert cfg.uniform_prior is True and cfg.distribution_alignment is True
    assert cfg.loss_start is None and cfg.ramp_epochs is None and cfg.lr_horizon is None
    assert cfg.min_p_share == 0.25  # our guard against a tiny P (0 restores the paper's threshold)


def test_resolve_short_run_scales_and_uses_every_loss():
    sched = CoRegConfig().resolve(epochs=30, warmup_epochs=10)
    # 20 post-warm-up epochs: start round(0.2 * 20) = 4, ramp round(0.32 * 20) = round(6.4) = 6
    assert sched.loss_start == 4 and sched.ramp_epochs == 6
    assert sched.loss_start_epoch == 14 and sched.lr_horizon == 30
    assert sched.is_warmup(9) and not sched.is_warmup(10)
    assert sched.loss_weights(5) == (0.0, 0.0, 0.0)
    assert sched.loss_weights(13) == (1.0, 0.0, 0.0)
    assert sched.loss_weights(14) == (1.0, 0.1, 0.1)
    assert sched.loss_weights(29) == (1.0, 0.1, 0.1)
    assert sched.lambda_u(10) == 0.0
    assert sched.lambda_u(13) == pytest.approx(0.5)
    assert sched.lambda_u(16) == 1.0 and sched.lambda_u(29) == 1.0


def test_resolve_paper_schedule_with_explicit_values():
    sched = CoRegConfig(loss_start=10, ramp_epochs=16).resolve(epochs=800, warmup_epochs=50)
    assert (sched.loss_start, sched.ramp_epochs, sched.loss_start_epoch) == (10, 16, 60)
    assert not sched.representation_losses_active(59) and sched.representation_losses_active(60)
    assert [sched.lambda_u(e) for e in (40, 50, 58, 66, 100)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert sched.lambda_u(50.25) == pytest.approx(0.25 / 16)  # fractional epochs, as the reference code
    assert sched.learning_rate(0) == pytest.approx(0.01)
    assert sched.learning_rate(400) == pytest.approx(0.005005)


def test_resolve_tiny_runs_keep_at_least_one_epoch():
    sched = CoRegConfig().resolve(epochs=12, warmup_epochs=10)  # 2 post-warm-up epochs
    assert (sched.loss_start, sched.ramp_epochs) == (1, 1)
    assert sched.representation_losses_active(11)
    only_warmup = CoRegConfig().resolve(epochs=10, warmup_epochs=10)
    assert (only_warmup.loss_start, only_warmup.ramp_epochs) == (1, 1)


def test_resolve_rejects_bad_lengths_and_config_rejects_bad_values():
    with pytest.raises(ValueError):
        CoRegConfig().resolve(epochs=10, warmup_epochs=11)
    with pytest.raises(ValueError):
        CoRegConfig().resolve(epochs=0, warmup_epochs=0)
    for bad in ({"sharpen_temperature": 0.0}, {"key_momentum": 1.0}, {"ramp_epochs": 0}, {"loss_start": -1}):
        with pytest.raises(ValueError):
            CoRegConfig(**bad)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = CoRegConfig(loss_start=11, uniform_prior=False)
    assert CoRegConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="partialY"):
        CoRegConfig.from_dict({"partialY": 1})


def test_lambda_u_ramp_values():
    assert lambda_u_ramp(50, 50, 16) == 0.0
    assert lambda_u_ramp(54, 50, 16) == 0.25
    assert lambda_u_ramp(62, 50, 16, max_weight=2.0) == 1.5
    assert lambda_u_ramp(70, 50, 16) == 1.0
    with pytest.raises(ValueError):
        lambda_u_ramp(1, 0, 0)


def test_cosine_lr_own_horizon_and_reference_800():
    assert cosine_lr(0, 0.01, 1e-5, 100) == pytest.approx(0.01)
    assert cosine_lr(100, 0.01, 1e-5, 100) == pytest.approx(1e-5)
    assert cosine_lr(150, 0.01, 1e-5, 100) == pytest.approx(1e-5)
    # the reference code's hard-coded 800 leaves a 100-epoch run near 9.6e-3 (spec section 9)
    assert cosine_lr(99, 0.01, 1e-5, 800) == pytest.approx(0.0096272491, rel=1e-6)
    sched = CoRegConfig(lr_horizon=800).resolve(epochs=100, warmup_epochs=50)
    assert sched.learning_rate(99) == pytest.approx(0.0096272491, rel=1e-6)


def test_total_loss_start_epochs():
    sched = CoRegConfig().resolve(epochs=30, warmup_epochs=10)
    l_cr, l_prot, l_cont = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    assert float(total_loss(l_cr, None, None, 13, sched)) == 1.0
    assert float(total_loss(l_cr, l_prot, l_cont, 13, sched)) == 1.0
    assert math.isclose(float(total_loss(l_cr, l_prot, l_cont, 14, sched)), 1.5, rel_tol=1e-6)
    with pytest.raises(ValueError):
        total_loss(l_cr, None, l_cont, 14, sched)
    with pytest.raises(ValueError):
        total_loss(l_cr, l_prot, l_cont, 3, sched)


def test_describe_is_plain():
    described = CoRegConfig().resolve(30, 10).describe()
    assert described["loss_start_epoch"] == 14 and described["ramp_epochs"] == 6
