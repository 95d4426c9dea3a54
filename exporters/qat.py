"""Label-free quantization-aware fine-tuning: the int8 ladder's last step (issue #28 item 2).

Post-training quantization rounds a network that never saw rounding. Here a copy of the exported network
is fine-tuned for a few epochs while its weights and tensors are rounded as onnxruntime's static
quantization will round them (simulation.py, the target's settings; gradients pass straight through the
rounding), towards the fp32 network's own outputs (self-distillation: its probabilities and its logits,
on MixUp blends of the training images, which cover more of its function than the images alone): no
label. The copy
then goes through the same onnxruntime pre-processing, quantization and parity gate as every attempt,
judged against the fp32 network, not against itself.

The targets are not restricted to the candidate sets: measured on an undertrained test_resnet run
(docs/INT8.md, "Quantization-aware fine-tuning"), the restriction moved the copy towards the candidate sets
(+6 points of accuracy) and away from the fp32 network parity judges it by (top-1 agreement 0.917 against
0.972 without it).

    distillation_loss              KL to the fp32 probabilities + logit error (cosine is measured on logits)
    fine_tune                      the loop: a copy of the network back, with what it did
    mixup                          the inputs: blends of two training images
    epochs_within_budget           how many epochs stay within a share of the training's own cost
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from coreg_edge.exporters.simulation import Simulation, batches
from coreg_edge.exporters.targets import QuantSettings

#: Fine-tuning may cost at most this share of the training's own image passes (issue #28: "at most 30%").
BUDGET_SHARE = 0.3
#: Weight of the logit-matching term: parity's cosine is measured on logits, which softmax targets leave free.
LOGIT_WEIGHT = 1.0


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL divergence from the teacher's probabilities to the student's (0 when they match), plus the
    squared logit error scaled by the teacher's logit variance."""
    targets = torch.softmax(teacher, dim=1)
    log_probs = torch.log_softmax(student, dim=1)
    divergence = (targets * (torch.log_softmax(teacher, dim=1) - log_probs)).sum(1).mean()
    return divergence + LOGIT_WEIGHT * ((student - teacher) ** 2).mean() / teacher.var().clamp_min(1e-6)


def epochs_within_budget(epochs: int, images: int, training_passes: float | None) -> int:
    """`epochs` over `images`, fewer when they would cost more than BUDGET_SHARE of the training's image
    passes (`training_passes`; None: unknown, `epochs` stand); at least one."""
    if training_passes is None or images <= 0:
        return epochs
    return max(1, min(epochs, math.floor(BUDGET_SHARE * training_passes / images)))


@dataclass
class FineTuned:
    """The fine-tuned network (float weights, no hooks) and what the fine-tuning did."""

    network: nn.Module
    record: dict[str, Any] = field(default_factory=dict)


def fine_tune(
    network: nn.Module,
    images: np.ndarray,
    calibration: np.ndarray,
    settings: QuantSettings,
    *,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    step: Callable[[int], None] = lambda _: None,
) -> FineTuned:
    """A copy of `network` fine-tuned under `settings`' rounding on `images` (preprocessed, N x C x H x W)
    and their MixUp blends, towards the network's own outputs; `calibration` measures the activation ranges
    at the start of each epoch, as onnxruntime will on the same images. BatchNorm keeps its running
    statistics (the file folds them into the convolutions), so the network stays in eval mode throughout.
    `step(n)` is told each batch's size (a progress bar)."""
    began = time.perf_counter()
    with _exact_float32(device):
        tuned, losses = _fine_tune(network, images, calibration, settings, epochs, batch_size, lr, seed, device, step)
    record = {
        "epochs": epochs,
        "images": len(images),
        "calibration_images": len(calibration),
        "targets": "the fp32 network's probabilities and logits, on MixUp blends of the images",
        "loss": losses,
        "lr": lr,
        "device": device,
        "seconds": round(time.perf_counter() - began, 3),
    }
    return FineTuned(tuned, record)


@contextmanager
def _exact_float32(device: str) -> Iterator[None]:
    """No TF32 on CUDA while fine-tuning: the simulated rounding decisions need float32 products."""
    if not device.startswith("cuda"):
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def mixup(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image blended with another of the batch, in a random share: inputs between the ones the
    network knows, where its function is as much the file's to match."""
    partner = torch.randperm(len(batch), generator=generator).to(batch.device)
    share = torch.rand(len(batch), *(1,) * (batch.dim() - 1), generator=generator).to(batch.device)
    return share * batch + (1 - share) * batch[partner]


def _fine_tune(
    network: nn.Module, images: np.ndarray, calibration: np.ndarray, settings: QuantSettings, epochs: int,
    batch_size: int, lr: float, seed: int, device: str, step: Callable[[int], None],
) -> tuple[nn.Module, list[float]]:  # fmt: skip
    teacher = copy.deepcopy(network).eval().to(device)
    student = copy.deepcopy(network).eval().to(device)
    simulation = Simulation(student, settings, next(batches(calibration, batch_size, device)))
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for _ in range(epochs):
        simulation.calibrate(batches(calibration, batch_size, device))
        total, count = 0.0, 0
        for index in torch.randperm(len(images), generator=generator).split(batch_size):
            batch = mixup(torch.as_tensor(np.ascontiguousarray(images[index.numpy()])).to(device), generator)
            with torch.no_grad():
                teacher_logits = teacher(batch).float()
            loss = distillation_loss(student(batch).float(), teacher_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(index), count + len(index)
            step(len(index))
        losses.append(round(total / max(count, 1), 5))
    tuned = simulation.finish().cpu().eval()
    for parameter in tuned.parameters():
        parameter.requires_grad_(False)
    return tuned, losses
