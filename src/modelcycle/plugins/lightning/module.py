"""The Lightning pieces: the seeds' ``PytorchLightning_CNN_MNIST`` module and the callback that
drives modelcycle's reporter from inside ``Trainer.fit``.

The module wraps one of the torch library's networks (the seed ConvNet by default) rather than
redefining it, so the Lightning and PyTorch plugins train and save the very same network.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import torchmetrics
from torch import nn

from modelcycle.core.config import Hyperparameters
from modelcycle.core.errors import PluginContractError
from modelcycle.lib.torch.nets import ConvNet
from modelcycle.lib.torch.training import make_optimizer

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.datasets import Split
    from modelcycle.core.training import TrainingContext

__all__ = ["LightningConvNet", "ReporterCallback"]


class LightningConvNet(L.LightningModule):
    """The seeds' ``PytorchLightning_CNN_MNIST``: a loss, a network, an accuracy metric.

    Args:
        net: the network to train; it must return log-probabilities (every network of the
            torch library's does). Default: the seed :class:`ConvNet` for ``num_classes``.
        num_classes: number of classes, for the default network and the accuracy metric.
        hyperparameters: optimizer settings used when the module is trained outside modelcycle
            (a plain ``Trainer.fit``); inside modelcycle the run's hyperparameters are used.

    Inside modelcycle's ``fit`` the batch loss of :meth:`training_step` comes from the
    ``train_step`` hook, so a user plugin can replace it. For Lightning that hook must return the
    loss **tensor** (graph attached) without stepping: the Trainer runs backward, the optimizer
    and the schedule. Outside modelcycle :meth:`compute_loss` is used directly.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        num_classes: int = 10,
        hyperparameters: Hyperparameters | None = None,
    ) -> None:
        super().__init__()
        # Registration order gives the seed summary's rows: loss, network, accuracy. NLL on
        # log-probabilities is exactly the seed's CrossEntropyLoss on them (log_softmax is
        # idempotent), without the second log_softmax.
        self.loss = nn.NLLLoss()
        self.net = net if net is not None else ConvNet(num_classes=num_classes)
        self.accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.hyperparameters = hyperparameters or Hyperparameters()
        #: update :attr:`accuracy` on every training batch (on for MLflow autologging only)
        self.track_accuracy = False
        self.training_context: TrainingContext | None = None
        self._train_step_hook: Any = None

    # -- modelcycle wiring ---------------------------------------------------------------
    def attach(self, context: TrainingContext) -> None:
        """Train under ``context``: its hyperparameters, its ``train_step`` hook, its state."""
        self.training_context = context
        self._train_step_hook = context.hook.train_step

    def detach(self) -> None:
        """Drop the references to the run (registry, reporter, data) once ``fit`` is over."""
        self.training_context = None
        self._train_step_hook = None

    # -- the LightningModule API -----------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``(N, K)`` of normalised images ``(N, C, H, W)``."""
        return self.net(x)

    def compute_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The mean NLL loss of ``(inputs, targets)``, graph attached (and the batch's accuracy
        accumulated when :attr:`track_accuracy` is on)."""
        inputs, targets = batch
        output = self.net(inputs)
        if self.track_accuracy:
            self.accuracy.update(output.detach(), targets)
        return self.loss(output, targets)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        hook = self._train_step_hook
        if hook is None:
            return self.compute_loss(batch)
        loss = hook(model=self, batch=batch, context=self.training_context)
        if not isinstance(loss, torch.Tensor):
            raise PluginContractError(
                "with framework 'lightning', 'train_step' must return the batch loss as a tensor "
                f"with its graph attached (got {type(loss).__name__}); the Lightning Trainer runs "
                "backward and the optimizer step, so the hook must not step itself"
            )
        return loss

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """For ``trainer.test(module, loader)``: logs ``test_loss`` and ``test_acc``."""
        inputs, targets = batch
        output = self.net(inputs)
        self.accuracy(output, targets)
        self.log("test_loss", self.loss(output, targets))
        self.log("test_acc", self.accuracy)

    def configure_optimizers(self) -> Any:
        """Adam (learning rate, betas, weight decay) or SGD with momentum, exactly as the PyTorch
        plugin builds them; a one-cycle schedule is stepped per batch."""
        holder = self.training_context or SimpleNamespace(hyperparameters=self.hyperparameters, state={})
        make_optimizer(self, holder, steps=max(1, int(self.trainer.estimated_stepping_batches)))  # type: ignore[arg-type]
        optimizer, scheduler = holder.state["optimizer"], holder.state["scheduler"]
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _modes(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in module.modules()]


class ReporterCallback(L.Callback):
    """Drives ``context.reporter`` from the Trainer: the seed's batch lines every
    ``log_interval`` batches, the test evaluation (the ``evaluate`` hook) and ``end_epoch`` after
    each epoch. Costs one ``.item()`` per batch; nothing is logged to Lightning per step.

    Args:
        context: the run.
        test: the raw test split, evaluated after each epoch.
        total: number of training records (for the ``[6400/60000 (11%)]`` part).
        log_train_accuracy: ``log`` the module's training accuracy to Lightning at each epoch
            end, where MLflow's autolog callback (which runs after this one) picks it up. The
            loss and test metrics are not logged there: ``end_epoch`` reaches the core's tracker,
            which records them per epoch already.
    """

    def __init__(self, context: TrainingContext, test: Split, total: int, log_train_accuracy: bool = False) -> None:
        self.context = context
        self.test = test
        self.total = total
        self.log_train_accuracy = log_train_accuracy
        self.log_interval = context.hyperparameters.log_interval
        self.batch_size = context.hyperparameters.batch_size
        self.epoch = 0
        self.num_batches = 0
        self.loss_sum = 0.0
        self.metrics: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = trainer.current_epoch + 1
        self.num_batches = int(trainer.num_training_batches)
        self.loss_sum = 0.0
        self.context.reporter.start_epoch(self.epoch, self.num_batches)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
        self.loss_sum += loss
        if batch_idx % self.log_interval == 0 and batch_idx:
            self.context.reporter.batch(self.epoch, batch_idx, self.num_batches, self.batch_size, self.total, loss)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        context = self.context
        modes = _modes(pl_module)
        try:
            test = context.registry.call_first("evaluate", model=pl_module, split=self.test, context=context)
        finally:
            for module, training in modes:
                module.training = training
        context.reporter.test_result(test["loss"], int(test["correct"]), int(test["total"]))
        self.metrics = {
            "train_loss": self.loss_sum / max(1, self.num_batches),
            "test_loss": float(test["loss"]),
            "test_accuracy": float(test["accuracy"]),
        }
        accuracy = getattr(pl_module, "accuracy", None)
        if self.log_train_accuracy and accuracy is not None and getattr(accuracy, "update_called", False):
            pl_module.log("train_acc", accuracy.compute(), on_step=False, on_epoch=True)
            accuracy.reset()
        context.reporter.end_epoch(self.epoch, dict(self.metrics), context)
        context.save_checkpoint(pl_module, self.epoch)
