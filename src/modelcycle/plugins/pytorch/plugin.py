"""Hook implementations of the PyTorch framework plugin.

The networks, tensors, optimizer, the ``model.pth`` artifact and its serving handlers are the
torch library's (:mod:`modelcycle.lib.torch`), shared with the Lightning plugin; the training
loop with its multi-host data parallelism is this plugin's own (:mod:`.training`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.markers import hookimpl
from modelcycle.core.plugin_types import FrameworkInfo, require_modules
from modelcycle.lib.examples import packaged_example_files, packaged_examples
from modelcycle.lib.torch.config import PytorchModelConfig
from modelcycle.lib.torch.distributed import process_group

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.serving.context import ServingContext
    from modelcycle.core.training import TrainingContext, TrainingResult

# torch is imported by the hooks that use it: loading the plugin to read framework_info or
# validate ``model:`` (a script-mode run's parent process) stays light. A missing torch still
# fails here, when the plugin loads, naming the extra to install.
require_modules("torch")


@hookimpl
def framework_info() -> FrameworkInfo:
    """modelcycle's ``pytorch`` extra; trains over several hosts with ``torch.distributed``."""
    return FrameworkInfo(
        distribution="modelcycle",
        extras=("pytorch",),
        libraries=("torch",),
        training_requirements=("torchinfo>=1.8",),
        examples=packaged_examples("pytorch"),
        example_files=packaged_example_files("pytorch"),
        process_group=process_group,
    )


@hookimpl
def model_config_class() -> type:
    return PytorchModelConfig


@hookimpl
def build_model(model_config: PytorchModelConfig, dataset: Dataset, context: TrainingContext) -> torch.nn.Module:
    """Build the configured network, seeded so initial weights are reproducible.

    With ``class`` the user's ``nn.Module`` is loaded from ``context.source_dir``, constructed,
    checked with one forward on two real training records (``(2, num_classes)``) and wrapped
    in :class:`~modelcycle.lib.torch.user_net.LogProbs` per its ``output``; its code is
    recorded in ``context.user_code`` for the model directory."""
    import torch

    from modelcycle.lib.torch import training as torch_training
    from modelcycle.lib.torch.nets import build_net_for
    from modelcycle.lib.torch.user_net import LogProbs, build_user_net

    torch.manual_seed(context.hyperparameters.seed)
    if model_config.user_class is None:
        return build_net_for(model_config, context.input_shape, len(dataset.classes))
    sample = torch_training.to_tensor(dataset.train.images[:2], context)
    code, net = build_user_net(model_config, context.source_dir, context.input_shape, len(dataset.classes), sample)
    context.user_code = code
    return LogProbs(net, model_config.effective_output)


@hookimpl
def summarize_model(model: torch.nn.Module, context: TrainingContext) -> str:
    """A torchinfo table for one batch of the configured size."""
    from modelcycle.lib.torch import training as torch_training

    return str(torch_training.summary(model, context))


@hookimpl
def train_step(model: torch.nn.Module, batch: Any, context: TrainingContext) -> float:
    from modelcycle.plugins.pytorch import training

    return training.train_step(model, batch, context)


@hookimpl
def fit(model: torch.nn.Module, dataset: Dataset, context: TrainingContext) -> TrainingResult:
    import torch

    from modelcycle.plugins.pytorch import training

    torch.manual_seed(context.hyperparameters.seed + context.rank)  # distinct dropout per rank
    return training.fit(model, dataset, context)


@hookimpl
def evaluate(model: torch.nn.Module, split: Split, context: TrainingContext) -> dict[str, float]:
    from modelcycle.lib.torch import training as torch_training

    return torch_training.evaluate(model, split, context)


@hookimpl
def save_model(model: torch.nn.Module, model_dir: Path, context: TrainingContext) -> list[str]:
    """The bare network's ``state_dict`` as ``model.pth``."""
    from modelcycle.lib.torch import artifact

    return artifact.save_weights(model, model_dir)


@hookimpl
def save_checkpoint(model: torch.nn.Module, directory: Path, context: TrainingContext) -> list[str]:
    """Weights, optimizer, schedule and RNG states as one ``weights_only`` torch file."""
    from modelcycle.lib.torch import checkpoint

    return checkpoint.save_training_state(model, directory, context)


@hookimpl
def load_checkpoint(model: torch.nn.Module, directory: Path, context: TrainingContext) -> bool:
    from modelcycle.lib.torch import checkpoint

    return checkpoint.load_training_state(model, directory, context)


@hookimpl
def model_fn(model_dir: Path, context: ServingContext) -> torch.nn.Module:
    """Rebuild the network from the manifest and load its weights safely."""
    from modelcycle.lib.torch import artifact

    return artifact.load_model(model_dir, context)


@hookimpl
def predict_fn(data: np.ndarray, model: torch.nn.Module, context: ServingContext) -> np.ndarray:
    """Normalise raw pixels as in training, forward, and return probabilities ``(N, K)``."""
    from modelcycle.lib.torch import artifact

    return artifact.predict(data, model, context)


@hookimpl
def script_handler_defaults(model_dir: Path) -> dict[str, Any]:
    """SageMaker's PyTorch toolkit defaults for a script-mode model
    (:mod:`modelcycle.lib.torch.script_defaults`)."""
    from modelcycle.lib.torch.script_defaults import default_handlers

    return default_handlers(model_dir)
