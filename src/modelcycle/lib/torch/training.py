"""Torch data and optimisation helpers shared by the PyTorch and Lightning plugins: the whole
split normalised once into a channels-last tensor (no per-item transforms, no DataLoader on the
hot path), the configured optimizer and schedule, and the NLL/accuracy evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.datasets import Split
    from modelcycle.core.training import TrainingContext

__all__ = ["to_tensor", "make_optimizer", "evaluate_tensors", "evaluate", "summary"]


def to_tensor(images: np.ndarray, context: TrainingContext) -> torch.Tensor:
    """Raw uint8 images ``(N, H, W[, C])`` → normalised float32 ``(N, C, H, W)``, in one pass,
    laid out channels-last (torch's CPU conv and max-pool kernels are ~30% faster that way).
    Tabular records ``(N, F)`` → encoded float32 ``(N, W)`` by ``Preprocessing.apply``."""
    prep = context.preprocessing
    assert prep is not None, "the trainer sets preprocessing before fit"
    if images.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(prep.apply(images), dtype=np.float32))
    raw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    tensor = torch.from_numpy(np.array(raw, dtype=np.float32, copy=True))  # torch ops: multi-threaded
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, -1, 1, 1) * prep.scale
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, -1, 1, 1) * prep.scale
    return tensor.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)


def make_optimizer(model: torch.nn.Module, context: TrainingContext, steps: int) -> None:
    """Create the configured optimizer (with its learning rate) and schedule in ``context.state``."""
    hp = context.hyperparameters
    if hp.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            model.parameters(), lr=hp.learning_rate, betas=(hp.beta_1, hp.beta_2), weight_decay=hp.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=hp.learning_rate, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
    scheduler = None
    if hp.lr_schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.learning_rate, total_steps=steps)
    context.state["optimizer"] = optimizer
    context.state["scheduler"] = scheduler


@torch.inference_mode()
def evaluate_tensors(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Average NLL loss and accuracy over pre-normalised tensors."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        output = model(inputs[start : start + batch_size])
        target = targets[start : start + batch_size]
        loss_sum += F.nll_loss(output, target, reduction="sum").item()
        correct += int((output.argmax(1) == target).sum())
    total = len(inputs)
    return {"loss": loss_sum / total, "accuracy": correct / total, "correct": float(correct), "total": float(total)}


def evaluate(model: torch.nn.Module, split: Split, context: TrainingContext) -> dict[str, float]:
    """Evaluate on a raw split (normalised here)."""
    targets = torch.from_numpy(split.labels.astype(np.int64))
    return evaluate_tensors(model, to_tensor(split.images, context), targets, context.hyperparameters.test_batch_size)


def summary(model: torch.nn.Module, context: TrainingContext) -> Any:
    """torchinfo's statistics of ``model`` for one batch of the configured size (output sizes
    and parameter counts per layer); ``str()`` of it is the table."""
    from torchinfo import summary as torchinfo_summary

    return torchinfo_summary(
        model,
        input_size=(context.hyperparameters.batch_size, *context.input_shape),
        device="cpu",
        verbose=0,
        col_names=("output_size", "num_params"),
    )
