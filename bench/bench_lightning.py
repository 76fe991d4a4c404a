"""One Lightning epoch through modelcycle's Lightning plugin vs a plain ``lightning.Trainer.fit``.

Both train the same LightningModule (the seed ConvNet wrapped in ``LightningConvNet``) on the full
MNIST training set (batch 64, Adam 1e-3, constant learning rate) from the same shuffled
``TensorDataset`` loader, then evaluate once on the 10,000 test images; both normalise the data
inside the timing. The plain Trainer has its progress bar, model summary, logger and checkpoints
turned off, like the plugin's. What the ratio measures is modelcycle's cost on top of Lightning:
the ``train_step`` hook per batch, the reporter callback, the ``evaluate`` hook. Runs are
interleaved so machine drift hits both alike. Each run's CPU time (this process)
is recorded too: on a machine shared with other jobs, with ``threads=1``, it is the steadier
measure of the work each side does (wall time there swings several-fold with the other jobs).
Both sides use the same seed (weights, dropout) and the same seeded loader order; the order of
the sides alternates round by round (A B, B A, …). ``run`` returns the raw per-round lists:
``{"rounds", "seed", "threads", "modelcycle_s", "plain_s", "modelcycle_cpu_s", "plain_cpu_s",
"modelcycle_accuracy", "plain_accuracy"}``.

    python bench/bench_lightning.py [rounds] [threads]
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet_context  # noqa: E402
from compare import alternate  # noqa: E402

import lightning as L  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from modelcycle.core.config import Hyperparameters, UseCaseConfig  # noqa: E402
from modelcycle.core.registry import PluginRegistry  # noqa: E402
from modelcycle.core.training import load_training_data  # noqa: E402
from modelcycle.plugins.lightning.module import LightningConvNet  # noqa: E402
from modelcycle.lib.torch.nets import ConvNet  # noqa: E402
from modelcycle.lib.torch.training import evaluate_tensors, to_tensor  # noqa: E402


def _config() -> UseCaseConfig:
    hp = Hyperparameters(epochs=1, batch_size=64, learning_rate=1e-3, lr_schedule="constant")
    return UseCaseConfig(name="bench", framework="lightning", hyperparameters=hp)


def modelcycle_epoch(registry: PluginRegistry, config: UseCaseConfig, out: dict[str, Any]) -> float:
    """Seconds for the plugin's ``fit`` (1 epoch + test evaluation) through the hooks, quiet."""
    context, dataset = quiet_context(registry, config)
    model = registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)
    started, cpu = time.perf_counter(), time.process_time()
    result = registry.call_first("fit", model=model, dataset=dataset, context=context)
    seconds = time.perf_counter() - started
    out.setdefault("modelcycle_cpu", []).append(time.process_time() - cpu)
    out.setdefault("modelcycle_accuracy", []).append(result.metrics["test_accuracy"])
    return seconds


def plain_epoch(config: UseCaseConfig, out: dict[str, Any]) -> float:
    """Seconds for a plain ``Trainer.fit`` of the same module and loader, then the same evaluation."""
    dataset, preprocessing = load_training_data(config)
    hp = config.hyperparameters
    torch.manual_seed(hp.seed)
    module = LightningConvNet(ConvNet(), hyperparameters=hp).to(memory_format=torch.channels_last)
    torch.manual_seed(hp.seed)  # dropout, as the plugin's fit seeds it
    normaliser = SimpleNamespace(preprocessing=preprocessing)
    started, cpu = time.perf_counter(), time.process_time()
    x = to_tensor(dataset.train.images, normaliser)  # type: ignore[arg-type]
    y = torch.from_numpy(dataset.train.labels.astype(np.int64))
    loader = DataLoader(
        TensorDataset(x, y), batch_size=hp.batch_size, shuffle=True, num_workers=0,
        generator=torch.Generator().manual_seed(hp.seed),
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    x_test = to_tensor(dataset.test.images, normaliser)  # type: ignore[arg-type]
    y_test = torch.from_numpy(dataset.test.labels.astype(np.int64))
    accuracy = evaluate_tensors(module.net, x_test, y_test, hp.test_batch_size)["accuracy"]
    seconds = time.perf_counter() - started
    out.setdefault("plain_cpu", []).append(time.process_time() - cpu)
    out.setdefault("plain_accuracy", []).append(accuracy)
    return seconds


def run(rounds: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Seconds per epoch of each side per round (goal: ratio ≤ 1.05); ``threads`` sets torch's
    intra-op threads (default: torch's own)."""
    if threads:
        torch.set_num_threads(threads)
    # the plain Trainer's start-up banner and loader-worker advice, outside any timing
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    config = _config()
    registry = PluginRegistry()
    registry.load_framework("lightning")
    load_training_data(config)  # warm the dataset cache outside the timing
    out: dict[str, Any] = {}
    modelcycle_epoch(registry, config, {})  # warm-up: first-touch allocations, kernels
    plain_epoch(config, {})
    mc, plain = alternate(lambda: modelcycle_epoch(registry, config, out), lambda: plain_epoch(config, out), rounds)
    return {
        "rounds": rounds, "seed": config.hyperparameters.seed, "threads": torch.get_num_threads(),
        "modelcycle_s": mc, "plain_s": plain, "modelcycle_cpu_s": out["modelcycle_cpu"], "plain_cpu_s": out["plain_cpu"],
        "modelcycle_accuracy": out["modelcycle_accuracy"], "plain_accuracy": out["plain_accuracy"],
    }


if __name__ == "__main__":
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 5, int(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(result)
