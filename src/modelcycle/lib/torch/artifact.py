"""The ``model.pth`` artifact of the torch frameworks and its serving handlers.

Weights are saved as a ``state_dict`` and loaded with ``weights_only=True``; the network is
rebuilt from the manifest's ``model`` section, so no pickled code is ever loaded. An artifact
trained with ``framework: pytorch`` or ``framework: lightning`` is the same and served the same.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from modelcycle.core.errors import ArtifactError
from modelcycle.lib.torch.config import PytorchModelConfig
from modelcycle.lib.torch.nets import build_net

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.serving.context import ServingContext

__all__ = ["WEIGHTS", "save_weights", "load_model", "predict"]

WEIGHTS = "model.pth"


def save_weights(model: torch.nn.Module, model_dir: Path) -> list[str]:
    """Write ``model``'s ``state_dict`` (the bare module's, under DistributedDataParallel) as
    ``model_dir/model.pth``; return ``["model.pth"]``."""
    module = getattr(model, "module", model)
    torch.save(module.state_dict(), Path(model_dir) / WEIGHTS)
    return [WEIGHTS]


def load_model(model_dir: Path, context: ServingContext) -> torch.nn.Module:
    """Rebuild the network the manifest describes and load ``model.pth`` into it safely, in
    eval mode. ``MODELCYCLE_SERVING_THREADS`` caps torch's threads (one endpoint per core).

    Raises:
        ArtifactError: the weights are missing, corrupt, an arbitrary pickle, or do not fit
            the network the manifest describes.
    """
    threads = os.environ.get("MODELCYCLE_SERVING_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    manifest = context.manifest
    config = PytorchModelConfig.model_validate(manifest.model)
    channels, *side = manifest.input_schema.shape
    model = build_net(config, channels, side, len(manifest.classes))
    try:
        state = torch.load(Path(model_dir) / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        raise ArtifactError(
            f"cannot load {WEIGHTS} from {model_dir}: {exc}. It must be a state_dict saved by "
            "modelcycle's pytorch or lightning plugin (arbitrary pickles are refused)"
        ) from exc
    model.eval()
    return model


def predict(data: np.ndarray, model: torch.nn.Module, context: ServingContext) -> np.ndarray:
    """Normalise raw pixels ``(N, C, H, W)`` as in training, forward, and return class
    probabilities ``(N, K)`` (the networks return log-probabilities)."""
    inputs = torch.from_numpy(context.normalize(data))
    with torch.inference_mode():
        return model(inputs).exp_().numpy()
