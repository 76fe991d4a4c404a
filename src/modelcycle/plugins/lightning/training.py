"""The Lightning plugin's hooks, with Lightning and torch imported: training runs a
:class:`lightning.Trainer` on the torch library's networks wrapped in
:class:`~modelcycle.plugins.lightning.module.LightningConvNet`; everything else is the torch
library's code (:mod:`modelcycle.lib.torch`), shared with the PyTorch plugin rather than copied.

:mod:`.plugin` registers the hooks and imports this module only when one of them runs, so
loading the plugin (framework_info, ``model:`` validation) does not import Lightning.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from modelcycle.lib.torch import artifact, checkpoint
from modelcycle.lib.torch import training as torch_training
from modelcycle.lib.torch.nets import build_net_for
from modelcycle.lib.torch.user_net import LogProbs, build_user_net
from modelcycle.plugins.lightning.config import PytorchModelConfig
from modelcycle.plugins.lightning.module import LightningConvNet, ReporterCallback

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.training import TrainingContext, TrainingReporter, TrainingResult

__all__ = ["LightningConvNet", "train_loader", "make_trainer", "build_model", "fit"]

#: Lightning's start-up banner ("GPU available: False, used: False", ...) goes to these loggers.
_CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def _net(model: Any, context: Any) -> torch.nn.Module:
    """The log-probability network: the one inside a LightningConvNet, or a user's own
    LightningModule (trained with its own ``training_step``) wrapped per its ``output``."""
    if isinstance(model, LightningConvNet):
        return model.net
    return LogProbs(model, context.model_config.effective_output)


def _overrides(module: torch.nn.Module, name: str) -> bool:
    """Whether ``module``'s class defines ``name`` itself (not LightningModule's default)."""
    return isinstance(module, L.LightningModule) and getattr(type(module), name) is not getattr(L.LightningModule, name)


def _default_optimizers(module: L.LightningModule, context: TrainingContext) -> Any:
    """``configure_optimizers`` for a user module without one: the configured optimizer and
    schedule, as the built-in module builds them."""

    def configure_optimizers() -> Any:
        torch_training.make_optimizer(module, context, steps=max(1, int(module.trainer.estimated_stepping_batches)))
        optimizer, scheduler = context.state["optimizer"], context.state["scheduler"]
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return configure_optimizers


def build_model(model_config: PytorchModelConfig, dataset: Dataset, context: TrainingContext) -> LightningConvNet:
    """The torch library's network (seeded as the PyTorch plugin seeds it), wrapped in the
    LightningModule.

    With ``class`` (checked with one forward on two real training records, its code recorded in
    ``context.user_code``): a ``LightningModule`` that defines ``training_step`` is trained as
    it is — its own loss and, when it defines one, its own ``configure_optimizers`` (else the
    configured optimizer); the ``train_step`` hook is not used then. Any other module (a
    ``LightningModule`` without ``training_step``, or a plain ``nn.Module``) is wrapped like the
    built-in networks: NLL on its output turned into log-probabilities per ``output``.
    Evaluation and serving always use ``forward`` per ``output``."""
    torch.manual_seed(context.hyperparameters.seed)
    if model_config.user_class is None:
        net = build_net_for(model_config, context.input_shape, len(dataset.classes))
        return LightningConvNet(net, num_classes=len(dataset.classes), hyperparameters=context.hyperparameters)
    sample = torch_training.to_tensor(dataset.train.images[:2], context)
    code, user = build_user_net(model_config, context.source_dir, context.input_shape, len(dataset.classes), sample,
                                kind_name="lightning.LightningModule (or torch.nn.Module)")
    context.user_code = code
    if _overrides(user, "training_step"):
        if not _overrides(user, "configure_optimizers"):
            user.configure_optimizers = _default_optimizers(user, context)  # type: ignore[method-assign]
        return user
    wrapped = LogProbs(user, model_config.effective_output)
    return LightningConvNet(wrapped, num_classes=len(dataset.classes), hyperparameters=context.hyperparameters)


def _with_unused_children(model: torch.nn.Module, rows: list[Any]) -> list[Any]:
    """torchinfo's rows plus the module's children the forward pass does not run (the loss and
    the accuracy metric), in registration order, as the seed's summary shows them."""
    from torchinfo.layer_info import LayerInfo
    from torchinfo.torchinfo import set_children_layers

    root, blocks, order = rows[0], {}, []
    for row in rows[1:]:
        if row.depth == 1:
            order.append(row.layer_id)
            blocks.setdefault(row.layer_id, [])
        blocks[order[-1]].append(row)
    children = list(model.named_children())
    if set(order) - {id(child) for _, child in children}:
        return rows
    result = [root]
    for name, child in children:
        if id(child) in blocks:
            result.extend(blocks.pop(id(child)))
        else:
            info = LayerInfo(name, child, 1, root)
            info.calculate_num_params()
            result.append(info)
    set_children_layers(result)
    return result


def summarize_model(model: LightningConvNet, context: TrainingContext) -> str:
    """torchinfo's table of the whole module for one batch: loss, network (with its layers and
    their output sizes and parameter counts), accuracy."""
    from torchinfo.model_statistics import ModelStatistics

    stats = torch_training.summary(model, context)
    try:
        rows = _with_unused_children(model, stats.summary_list)
        stats = ModelStatistics(rows, stats.input_size, stats.total_input, stats.formatting)
    except Exception:  # noqa: BLE001 - torchinfo internals changed: the plain table is still right
        pass
    return str(stats)


def train_step(model: LightningConvNet, batch: Any, context: TrainingContext) -> torch.Tensor:
    """The batch loss **tensor** for Lightning's ``training_step``; the Trainer steps.

    Unlike the PyTorch plugin's ``train_step`` (which steps and returns a float), this returns
    the loss with its graph attached. A plugin overriding ``train_step`` for ``framework:
    lightning`` must do the same.
    """
    return model.compute_loss(batch)


def train_loader(dataset: Dataset, context: TrainingContext) -> DataLoader:
    """The whole training split normalised once (channels-last) in a shuffled, seeded
    ``TensorDataset`` loader without worker processes (faster than workers on small machines)."""
    hp = context.hyperparameters
    x = torch_training.to_tensor(dataset.train.images, context)
    y = torch.from_numpy(dataset.train.labels.astype(np.int64))
    generator = torch.Generator().manual_seed(hp.seed)
    context.state["generator"] = generator  # the data order: part of a checkpoint
    return DataLoader(TensorDataset(x, y), batch_size=hp.batch_size, shuffle=True, num_workers=0, generator=generator)


def _progress_bar(reporter: TrainingReporter) -> bool:
    """Lightning's bar only on a terminal, and never beside the reporter's own bar."""
    return sys.stdout.isatty() and not reporter.quiet and not reporter.has_progress_bar


def make_trainer(context: TrainingContext, callbacks: list[L.Callback]) -> L.Trainer:
    """A single-process CPU Trainer: no logger, checkpoints or summary (modelcycle does those)."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=context.hyperparameters.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=_progress_bar(context.reporter),
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up banner and its advice to use loader workers (on purpose:
    the data is already in memory, and a worker is slower than none on 2 cores)."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            # lightning 2.6's own pytree helper with torch >= 2.10: not actionable by users
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextmanager
def _autolog(context: TrainingContext) -> Iterator[bool]:
    """``mlflow.pytorch.autolog`` for the duration of ``fit`` when ``capture: autolog`` and an
    MLflow run is active; yields whether autologging is on. An autolog configuration the caller
    set up beforehand is left as it is."""
    if context.config.capture != "autolog" or context.rank != 0:
        yield False
        return
    import mlflow

    if mlflow.active_run() is None:
        yield False
        return
    import mlflow.pytorch
    from mlflow.utils.autologging_utils import autologging_is_disabled

    ours = autologging_is_disabled(mlflow.pytorch.FLAVOR_NAME)
    if ours:
        mlflow.pytorch.autolog(log_models=False, checkpoint=False, silent=True)
    try:
        yield True
    finally:
        if ours:
            mlflow.pytorch.autolog(disable=True, silent=True)


def _fit_interruptibly(trainer: L.Trainer, model: L.LightningModule, loader: DataLoader, ckpt_path: Path | None = None) -> None:
    """``trainer.fit``, except that Ctrl+C raises KeyboardInterrupt as everywhere else in
    modelcycle: Lightning answers it with ``sys.exit(1)`` and ignores SIGINT from then on, which
    would end a notebook's or an API caller's process and leave it deaf to Ctrl+C."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as exc:
        if not trainer.interrupted:
            raise
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGINT, handler)
        raise KeyboardInterrupt("training interrupted") from exc


def fit(model: LightningConvNet, dataset: Dataset, context: TrainingContext) -> TrainingResult:
    """Train with ``lightning.Trainer.fit`` for ``epochs``, logging like the seed and evaluating
    on the test split after each epoch (through the ``evaluate`` hook).

    Checkpoints are Lightning's own (``trainer.save_checkpoint`` after each epoch: weights,
    optimizer, schedule, loop state) plus torch's RNG states; a resumed run hands the
    checkpoint to ``Trainer.fit(ckpt_path=..., weights_only=True)``."""
    from modelcycle.core.training import TrainingResult

    torch.manual_seed(context.hyperparameters.seed)
    loader = train_loader(dataset, context)
    model.to(memory_format=torch.channels_last)
    start = context.start_epoch(model)  # a resumed run: RNGs restored, Lightning's checkpoint noted
    with _autolog(context) as autologging, _quiet_lightning():
        callback = ReporterCallback(context, dataset.test, total=len(dataset.train), log_train_accuracy=autologging)
        trainer = make_trainer(context, [callback])
        context.state["trainer"] = trainer
        wrapper = isinstance(model, LightningConvNet)  # a user's own module trains as it is
        if wrapper:
            model.attach(context)
            model.track_accuracy = autologging
        try:
            _fit_interruptibly(trainer, model, loader, context.state.get("resume_checkpoint"))
        finally:
            if wrapper:
                model.detach()
                model.track_accuracy = False
    metrics = dict(callback.metrics) or (context.reporter.last_metrics() if start > 1 else {})
    return TrainingResult(run_id=context.run_id, metrics=metrics, history=list(context.reporter.history))


def evaluate(model: LightningConvNet, split: Split, context: TrainingContext) -> dict[str, float]:
    """The torch library's evaluation of the wrapped network: loss, accuracy, correct, total."""
    return torch_training.evaluate(_net(model, context), split, context)


def save_model(model: LightningConvNet, model_dir: Path, context: TrainingContext) -> list[str]:
    """The wrapped network's ``state_dict`` as ``model.pth``: the PyTorch plugin's artifact."""
    return artifact.save_weights(_net(model, context), model_dir)


LIGHTNING_CHECKPOINT = "lightning.ckpt"


def save_checkpoint(model: LightningConvNet, directory: Path, context: TrainingContext) -> list[str]:
    """Lightning's checkpoint of the running Trainer and torch's RNG states (data order, dropout)."""
    context.state["trainer"].save_checkpoint(Path(directory) / LIGHTNING_CHECKPOINT)
    torch.save(checkpoint.rng_state(context), Path(directory) / checkpoint.RNG_FILE)
    return [LIGHTNING_CHECKPOINT, checkpoint.RNG_FILE]


def load_checkpoint(model: LightningConvNet, directory: Path, context: TrainingContext) -> bool:
    """Restore the RNG states now; the Trainer restores the rest from ``ckpt_path`` in ``fit``."""
    rng = torch.load(Path(directory) / checkpoint.RNG_FILE, map_location="cpu", weights_only=True)
    checkpoint.restore_rng_state(rng, context)
    context.state["resume_checkpoint"] = Path(directory) / LIGHTNING_CHECKPOINT
    return True
