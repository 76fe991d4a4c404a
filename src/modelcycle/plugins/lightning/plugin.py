"""Hook implementations of the Lightning framework plugin.

Training runs a :class:`lightning.Trainer` on the torch library's networks wrapped in
:class:`~modelcycle.plugins.lightning.module.LightningConvNet`; everything else is the torch
library's code (:mod:`modelcycle.lib.torch`), shared with the PyTorch plugin rather than copied:
the networks, the normalisation, the optimizer and schedule, the evaluation, the ``model.pth``
artifact and the serving handlers. An artifact trained here is served exactly like one trained
with ``framework: pytorch``.

``train_step`` differs from the PyTorch plugin's: the Trainer owns backward and the optimizer
step, so for Lightning the hook returns the loss **tensor** (graph attached) and does not step.

With ``capture: autolog`` and an active MLflow run (the core opens one around training),
``mlflow.pytorch.autolog`` is switched on for the duration of ``fit``: Lightning's params
(``epochs``, the optimizer's settings), the module's training accuracy per epoch (``train_acc``)
and Lightning's model summary; no model and no checkpoints (the artifact is modelcycle's), and
not the loss and test metrics, which the core's tracker records per epoch in both capture modes.
With ``capture: manual`` nothing here touches MLflow.

Lightning and torch are imported by the hooks that use them (the code is in :mod:`.training`):
loading the plugin for framework_info or ``model:`` validation (a script-mode run's parent)
stays light. A missing library still fails the plugin's load, naming the extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.markers import hookimpl
from modelcycle.core.plugin_types import FrameworkInfo, require_modules
from modelcycle.lib.examples import packaged_example_files, packaged_examples
from modelcycle.plugins.lightning.config import PytorchModelConfig

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.serving.context import ServingContext
    from modelcycle.core.training import TrainingContext, TrainingResult

require_modules("lightning", "torch")


@hookimpl
def framework_info() -> FrameworkInfo:
    """modelcycle's ``lightning`` extra; single-host training (one CPU Trainer)."""
    return FrameworkInfo(
        distribution="modelcycle",
        extras=("lightning",),
        libraries=("lightning", "torch"),
        requirements=("lightning>=2.4", "torchmetrics>=1.4"),
        training_requirements=("torchinfo>=1.8",),
        examples=packaged_examples("lightning"),
        example_files=packaged_example_files("lightning"),
    )


@hookimpl
def model_config_class() -> type:
    return PytorchModelConfig


@hookimpl
def build_model(model_config: PytorchModelConfig, dataset: Dataset, context: TrainingContext) -> Any:
    """:func:`.training.build_model`: the torch network in a LightningModule, or the user's module."""
    from modelcycle.plugins.lightning import training

    return training.build_model(model_config, dataset, context)


@hookimpl
def summarize_model(model: Any, context: TrainingContext) -> str:
    """:func:`.training.summarize_model`: torchinfo's table with the loss and accuracy modules."""
    from modelcycle.plugins.lightning import training

    return training.summarize_model(model, context)


@hookimpl
def train_step(model: Any, batch: Any, context: TrainingContext) -> torch.Tensor:
    """:func:`.training.train_step`: the batch loss **tensor** (the Trainer steps)."""
    from modelcycle.plugins.lightning import training

    return training.train_step(model, batch, context)


@hookimpl
def fit(model: Any, dataset: Dataset, context: TrainingContext) -> TrainingResult:
    """:func:`.training.fit`: ``lightning.Trainer.fit`` for ``epochs``, evaluating each epoch."""
    from modelcycle.plugins.lightning import training

    return training.fit(model, dataset, context)


@hookimpl
def evaluate(model: Any, split: Split, context: TrainingContext) -> dict[str, float]:
    """:func:`.training.evaluate`: the torch library's evaluation of the wrapped network."""
    from modelcycle.plugins.lightning import training

    return training.evaluate(model, split, context)


@hookimpl
def save_model(model: Any, model_dir: Path, context: TrainingContext) -> list[str]:
    """:func:`.training.save_model`: the PyTorch plugin's ``model.pth``."""
    from modelcycle.plugins.lightning import training

    return training.save_model(model, model_dir, context)


@hookimpl
def save_checkpoint(model: Any, directory: Path, context: TrainingContext) -> list[str]:
    """:func:`.training.save_checkpoint`: Lightning's checkpoint and torch's RNG states."""
    from modelcycle.plugins.lightning import training

    return training.save_checkpoint(model, directory, context)


@hookimpl
def load_checkpoint(model: Any, directory: Path, context: TrainingContext) -> bool:
    """:func:`.training.load_checkpoint`: RNG states now, the Trainer's state in ``fit``."""
    from modelcycle.plugins.lightning import training

    return training.load_checkpoint(model, directory, context)


@hookimpl
def model_fn(model_dir: Path, context: ServingContext) -> torch.nn.Module:
    """The bare network, rebuilt from the manifest with its weights loaded safely (PyTorch's)."""
    from modelcycle.lib.torch import artifact

    return artifact.load_model(model_dir, context)


@hookimpl
def predict_fn(data: np.ndarray, model: torch.nn.Module, context: ServingContext) -> np.ndarray:
    """Normalise raw pixels as in training and return probabilities ``(N, K)`` (PyTorch's)."""
    from modelcycle.lib.torch import artifact

    return artifact.predict(data, model, context)


@hookimpl
def script_handler_defaults(model_dir: Path) -> dict[str, Any]:
    """A script-mode Lightning model is served as PyTorch's (SageMaker's PyTorch container)."""
    from modelcycle.lib.torch.script_defaults import default_handlers

    return default_handlers(model_dir)
