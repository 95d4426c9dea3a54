"""The trainer's parts alone: the hook registry, the warm-up-end and metrics-log hooks, the one ensemble."""

import json
from types import SimpleNamespace

import torch

from coreg_edge.training import hooks, trainer
from coreg_edge.training.scores import ensemble_logits


def test_default_hooks_run_in_order_and_take_more():
    default = hooks.default_hooks()
    assert default["on_fit_epoch_end"] == [hooks.warmup_end, hooks.best_epoch_guard]
    assert default["on_model_save"] == [hooks.metrics_log]
    assert default["on_train_end"] == [hooks.reject_thresholds]
    assert hooks.default_hooks()["on_fit_epoch_end"] is not default["on_fit_epoch_end"]  # fresh lists per run
    calls = []
    run = SimpleNamespace(hooks={"on_x": [lambda a: calls.append(("first", a.epoch))]})
    hooks.add_hook(run, "on_x", lambda a: calls.append(("second", a.epoch)))
    hooks.add_hook(run, "on_y", lambda a: calls.append(("y", a.epoch)))
    hooks.run_hooks(run, "on_x", hooks.HookArgs(None, run, None, epoch=3))
    hooks.run_hooks(run, "on_nothing", hooks.HookArgs(None, run, None))
    assert calls == [("first", 3), ("second", 3)]


def test_trainer_keeps_its_names():
    for name in ("train", "check_before_launch", "resume_settings", "Interrupted", "CUTOUT_DATASETS", "PROBE_ITEMS",
                 "save_checkpoint", "_build_peer", "_amp_dtype", "_dataset_views", "_lost_a_process", "_fit",
                 "_finish"):  # fmt: skip
        assert hasattr(trainer, name), name


def test_ensemble_is_the_mean_of_a_and_b():
    a, b = torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, -1.0]])
    out = ensemble_logits({"a": a, "b": b})
    assert torch.equal(out["ensemble"], torch.tensor([[2.0, 1.0]]))
    assert "ensemble" not in ensemble_logits({"a": a})  # a baseline's single network


class _Schedule:
    def is_warmup(self, epoch):
        return True

    def describe(self):
        return {"warmup": 1}


def test_warmup_end_hook_ends_the_warmup_and_tells_the_guard(tmp_path, monkeypatch):
    end = SimpleNamespace(ended=None, why=None)

    def observe(epoch, mean_hit):
        assert mean_hit == 0.5  # the peers' mean held-out hit rate
        end.ended, end.why = epoch + 1, "flat"
        return True

    end.observe = observe
    settings = SimpleNamespace(epochs=4, coreg=SimpleNamespace(resolve=lambda epochs, warmup: _Schedule()))
    run = SimpleNamespace(
        warmup_end=end, schedule=_Schedule(), peers=[SimpleNamespace(name="a"), SimpleNamespace(name="b")],
        guard=SimpleNamespace(act_from=4), group=SimpleNamespace(is_main=True), warmup=4,
    )  # fmt: skip
    written = {}
    monkeypatch.setattr(hooks, "_update_config", lambda out, values: written.update(values))
    record = {"holdout": {"a": {"hit_rate": 0.4}, "b": {"hit_rate": 0.6}}}
    args = hooks.HookArgs(tmp_path, run, settings, epoch=1, record=record)
    hooks.warmup_end(args)
    assert run.warmup == 2 and run.guard.act_from == 2
    assert record["warmup_ended"] == {"epochs": 2, "why": "flat"} == written["warmup_ended"]
    assert args.events == ["warm-up ends after 2 epochs: flat"]
    hooks.warmup_end(args)  # ended: nothing more
    assert len(args.events) == 1


def test_metrics_log_writes_one_line_on_the_main_process(tmp_path):
    run = SimpleNamespace(group=SimpleNamespace(is_main=True))
    hooks.metrics_log(hooks.HookArgs(tmp_path, run, None, epoch=0, record={"epoch": 0, "lr": 0.1}))
    run.group.is_main = False
    hooks.metrics_log(hooks.HookArgs(tmp_path, run, None, epoch=1, record={"epoch": 1}))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 0, "lr": 0.1}]
