"""The PyTorch plugin's training loop: shuffled index batches over tensors normalised once, the
optimizer stepped in ``train_step``, and multi-host data parallelism (DDP) over disjoint shards.

The tensors, optimizer and evaluation come from :mod:`modelcycle.lib.torch.training`, which the
Lightning plugin shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from modelcycle.lib.torch.training import evaluate_tensors, make_optimizer, to_tensor

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.datasets import Dataset
    from modelcycle.core.training import TrainingContext, TrainingResult

__all__ = ["train_step", "fit", "shard_indices"]


def train_step(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], context: TrainingContext) -> float:
    """One Adam/SGD step on ``(inputs, targets)``; the network returns log-probabilities."""
    inputs, targets = batch
    optimizer = context.state["optimizer"]
    optimizer.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
    scheduler = context.state["scheduler"]
    if scheduler is not None:
        scheduler.step()
    return loss.item()


def shard_indices(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of a shuffled ``order``, as ``DistributedSampler(drop_last=True)``
    takes it: every rank gets ``len(order) // world_size`` indices and no index is given twice."""
    usable = len(order) - len(order) % world_size
    return order[rank:usable:world_size]


def _all_reduce_sum(*values: float) -> list[float]:
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def fit(model: torch.nn.Module, dataset: Dataset, context: TrainingContext) -> TrainingResult:
    """Train for ``epochs``, logging like the seed, evaluating on the test split each epoch.

    With ``context.world_size > 1`` (torch.distributed initialised by the caller) the model is
    wrapped in DistributedDataParallel and each rank trains on a disjoint shard of the same
    shuffled order (same seed on every rank; ``batch_size`` is per rank, as with
    DistributedSampler). A single-process run checkpoints after each epoch and resumes from
    ``context.start_epoch`` (weights, optimizer, schedule, dropout and data-order RNGs). Only rank 0 evaluates and reports; the shards each rank trained on are
    kept in ``context.state["data_shards"]`` (one index tensor per epoch). ``model`` itself stays
    unwrapped, so the state_dict saved afterwards has no ``module.`` prefix.
    """
    from modelcycle.core.training import TrainingResult

    hp, reporter, hook = context.hyperparameters, context.reporter, context.hook
    rank, world_size = context.rank, context.world_size
    distributed = world_size > 1
    x_train = to_tensor(dataset.train.images, context)
    y_train = torch.from_numpy(dataset.train.labels.astype(np.int64))
    lead = rank == 0
    if lead:
        x_test = to_tensor(dataset.test.images, context)
        y_test = torch.from_numpy(dataset.test.labels.astype(np.int64))
    total = len(x_train)
    per_rank = total // world_size if distributed else total
    num_batches = (per_rank + hp.batch_size - 1) // hp.batch_size
    model.to(memory_format=torch.channels_last)
    trained: torch.nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model)  # broadcasts rank 0's initial weights
        context.state["data_shards"] = []
    make_optimizer(model, context, steps=hp.epochs * num_batches)
    generator = torch.Generator().manual_seed(hp.seed)
    context.state["generator"] = generator
    start = context.start_epoch(model)  # after a crash: restores weights, optimizer, schedule, RNGs
    metrics: dict[str, float] = reporter.last_metrics() if start > 1 else {}
    for epoch in range(start, hp.epochs + 1):
        trained.train()
        if lead:
            reporter.start_epoch(epoch, num_batches)
        order = torch.randperm(total, generator=generator)
        if distributed:
            order = shard_indices(order, rank, world_size)
            context.state["data_shards"].append(order)
        loss_sum = 0.0
        for batch_index in range(num_batches):
            index = order[batch_index * hp.batch_size : (batch_index + 1) * hp.batch_size]
            loss = hook.train_step(model=trained, batch=(x_train[index], y_train[index]), context=context)
            loss_sum += loss
            if lead and batch_index % hp.log_interval == 0 and batch_index:
                reporter.batch(epoch, batch_index, num_batches, hp.batch_size * world_size, per_rank * world_size, loss)
        batches = float(num_batches)
        if distributed:
            loss_sum, batches = _all_reduce_sum(loss_sum, batches)
        metrics = {"train_loss": loss_sum / batches}
        if lead:
            test = evaluate_tensors(model, x_test, y_test, hp.test_batch_size)
            reporter.test_result(test["loss"], int(test["correct"]), int(test["total"]))
            metrics |= {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}
            reporter.end_epoch(epoch, metrics, context)
        context.save_checkpoint(model, epoch)
    return TrainingResult(run_id=context.run_id, metrics=metrics, history=list(reporter.history))
