"""Trainer parts that need no training: AMP choice, resume settings, the image cache."""

import numpy as np
import torch

from coreg_edge.data import open_source
from coreg_edge.settings.train import TrainSettings
from coreg_edge.training.data import preprocess_for
from coreg_edge.training.image_store import decode_to_memory
from coreg_edge.training.trainer import _amp_dtype, resume_settings


def test_amp_is_bf16_only_where_asked_on_cpu():
    cpu = torch.device("cpu")
    assert _amp_dtype("auto", cpu) is None and _amp_dtype("off", cpu) is None
    assert _amp_dtype("on", cpu) is torch.bfloat16


def test_resume_takes_only_execution_settings_from_the_new_call():
    stored = TrainSettings(backbone="test_resnet", epochs=7, device="cuda", compile="on").to_dict()
    settings = resume_settings(stored, {"device": "cpu", "compile": "off", "epochs": 99, "data": None})
    assert (settings.device, settings.compile) == ("cpu", "off")
    assert settings.epochs == 7 and settings.backbone == "test_resnet" and settings.data is None


def test_cache_images_with_worker_threads_is_identical():
    source = open_source("digits:test")
    config = preprocess_for(source, 8, None)
    indices = np.arange(40)
    assert torch.equal(decode_to_memory(source, indices, config, quiet=True),
                       decode_to_memory(source, indices, config, quiet=True, workers=3))  # fmt: skip


def test_fer2013_gets_the_reference_cutout_view():
    """`auto` named fer2013 in a rule only built-ins reach, and FER2013 is a folder: it got RandAugment while
    docs/ALGORITHM.md says the reference code's Cutout view. The recipe sets it; the rule names built-ins only."""
    from coreg_edge.data import DATASETS
    from coreg_edge.pipeline.calls import train_call
    from coreg_edge.recipe import load_recipe
    from coreg_edge.training import auto, trainer

    settings = TrainSettings(**train_call(load_recipe("fer2013")))
    assert settings.strong_augment == "cutout"
    resolved, chosen = auto.resolve_settings(settings, 28709, 64, "randaugment", True)  # a folder's rule
    assert resolved.strong_augment == "cutout" and "strong_augment" not in chosen
    assert set(trainer.CUTOUT_DATASETS) <= set(DATASETS)  # every name in the rule can match
    folder = {"source": "folder", "root": "/data/fer2013/train"}
    assert trainer._dataset_views(folder) == (True, "randaugment")
    assert trainer._dataset_views({"source": "builtin", "root": "fmnist"})[1] == "cutout"
