"""Hook implementations of the PyTorch framework plugin.

Weights are saved as a ``state_dict`` (``model.pth``) and loaded with ``weights_only=True``;
the network is rebuilt from the manifest's ``model`` section, so no pickled code is ever loaded.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modelcycle.core.errors import ArtifactError
from modelcycle.core.markers import hookimpl
from modelcycle.plugins.pytorch import training
from modelcycle.plugins.pytorch.config import PytorchModelConfig
from modelcycle.plugins.pytorch.nets import CifarNet, ConvNet, FCNet

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.serving.context import ServingContext
    from modelcycle.core.training import TrainingContext, TrainingResult

WEIGHTS = "model.pth"


def _build(config: PytorchModelConfig, channels: int, side: int, num_classes: int) -> torch.nn.Module:
    if config.architecture == "cnn":
        return ConvNet(
            in_channels=channels,
            num_classes=num_classes,
            hidden_channels=config.hidden_channels,
            kernel_size=config.kernel_size,
            fc_size=config.fc_size,
            dropout=config.dropout,
            image_size=side,
        )
    if config.architecture == "fc":
        return FCNet(in_features=channels * side * side, num_classes=num_classes, hidden_size=config.hidden_size)
    return CifarNet(in_channels=channels, num_classes=num_classes)


@hookimpl
def model_config_class() -> type:
    return PytorchModelConfig


@hookimpl
def build_model(model_config: PytorchModelConfig, dataset: Dataset, context: TrainingContext) -> torch.nn.Module:
    """Build the configured network, seeded so initial weights are reproducible."""
    torch.manual_seed(context.hyperparameters.seed)
    channels, side, _ = context.input_shape
    return _build(model_config, channels, side, len(dataset.classes))


@hookimpl
def summarize_model(model: torch.nn.Module, context: TrainingContext) -> str:
    """A torchinfo table for one batch of the configured size."""
    from torchinfo import summary

    stats = summary(
        model,
        input_size=(context.hyperparameters.batch_size, *context.input_shape),
        device="cpu",
        verbose=0,
        col_names=("output_size", "num_params"),
    )
    return str(stats)


@hookimpl
def train_step(model: torch.nn.Module, batch: Any, context: TrainingContext) -> float:
    return training.train_step(model, batch, context)


@hookimpl
def fit(model: torch.nn.Module, dataset: Dataset, context: TrainingContext) -> TrainingResult:
    torch.manual_seed(context.hyperparameters.seed + context.rank)  # distinct dropout per rank
    return training.fit(model, dataset, context)


@hookimpl
def evaluate(model: torch.nn.Module, split: Split, context: TrainingContext) -> dict[str, float]:
    return training.evaluate(model, split, context)


@hookimpl
def save_model(model: torch.nn.Module, model_dir: Path, context: TrainingContext) -> list[str]:
    module = getattr(model, "module", model)  # DistributedDataParallel: save the bare model
    torch.save(module.state_dict(), Path(model_dir) / WEIGHTS)
    return [WEIGHTS]


@hookimpl
def model_fn(model_dir: Path, context: ServingContext) -> torch.nn.Module:
    """Rebuild the network from the manifest and load its weights safely."""
    threads = os.environ.get("MODELCYCLE_SERVING_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    manifest = context.manifest
    config = PytorchModelConfig.model_validate(manifest.model)
    channels, side, _ = manifest.input_schema.shape
    model = _build(config, channels, side, len(manifest.classes))
    try:
        state = torch.load(Path(model_dir) / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        raise ArtifactError(
            f"cannot load {WEIGHTS} from {model_dir}: {exc}. It must be a state_dict saved by "
            "modelcycle's pytorch plugin (arbitrary pickles are refused)"
        ) from exc
    model.eval()
    return model


@hookimpl
def predict_fn(data: np.ndarray, model: torch.nn.Module, context: ServingContext) -> np.ndarray:
    """Normalise raw pixels as in training, forward, and return probabilities ``(N, K)``."""
    inputs = torch.from_numpy(context.normalize(data))
    with torch.inference_mode():
        return model(inputs).exp_().numpy()
