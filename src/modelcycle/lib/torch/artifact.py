"""The ``model.pth`` artifact of the torch frameworks and its serving handlers.

Weights are saved as a ``state_dict`` and loaded with ``weights_only=True``; the network is
rebuilt from the manifest's ``model`` section, so no pickled code is ever loaded. A user's own
network (``model.class``) is rebuilt from the model directory's ``code/user/`` copy of its file. An artifact
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
from modelcycle.lib.torch.nets import build_net_for
from modelcycle.lib.torch.user_net import rebuild_user_net, unwrap

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.serving.context import ServingContext

__all__ = ["WEIGHTS", "save_weights", "load_model", "predict"]

WEIGHTS = "model.pth"


def save_weights(model: torch.nn.Module, model_dir: Path) -> list[str]:
    """Write ``model``'s ``state_dict`` (the bare module's, under DistributedDataParallel) as
    ``model_dir/model.pth``; return ``["model.pth"]``."""
    module = unwrap(getattr(model, "module", model))
    torch.save(module.state_dict(), Path(model_dir) / WEIGHTS)
    return [WEIGHTS]


def load_model(model_dir: Path, context: ServingContext) -> torch.nn.Module:
    """Rebuild the network the manifest describes and load ``model.pth`` into it safely, in
    eval mode (a built-in convolutional network channels-last, see :func:`_to_channels_last`).
    ``MODELCYCLE_SERVING_THREADS`` caps torch's threads (one endpoint per core).

    Raises:
        ArtifactError: the weights are missing, corrupt, an arbitrary pickle, or do not fit
            the network the manifest describes.
    """
    threads = os.environ.get("MODELCYCLE_SERVING_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    manifest = context.manifest
    if manifest.user_code:  # the user's network, from the model directory's code/user/ copy
        model: torch.nn.Module = rebuild_user_net(Path(model_dir), manifest)
    else:
        config = PytorchModelConfig.model_validate(manifest.model)
        model = build_net_for(config, manifest.model_input_shape, len(manifest.classes))
    try:
        state = torch.load(Path(model_dir) / WEIGHTS, map_location="cpu", weights_only=True)
        unwrap(model).load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        raise ArtifactError(
            f"cannot load {WEIGHTS} from {model_dir}: {exc}. It must be a state_dict saved by "
            "modelcycle's pytorch or lightning plugin (arbitrary pickles are refused)"
        ) from exc
    model.eval()
    if not manifest.user_code:
        _to_channels_last(model)
    return model


def _to_channels_last(model: torch.nn.Module) -> None:
    """Lay the built-in networks' convolutions out channels-last (NHWC), where oneDNN's kernels
    and max pooling run 1.3-1.8x faster than on NCHW at every batch size, with equal results. A
    user's network stays as it is: its code may ``view`` a tensor whose layout it assumes."""
    if any(parameter.dim() == 4 for parameter in model.parameters()):
        model.to(memory_format=torch.channels_last)
        model.modelcycle_channels_last = True  # type: ignore[assignment]


def predict(data: np.ndarray, model: torch.nn.Module, context: ServingContext) -> np.ndarray:
    """Normalise raw pixels ``(N, C, H, W)`` (or encode raw tabular records ``(N, F)``) as in
    training, forward, and return class probabilities ``(N, K)`` (the networks return
    log-probabilities; a user network is wrapped so that it does too, whatever its declared
    ``output``)."""
    inputs = torch.from_numpy(np.ascontiguousarray(context.normalize(data), dtype=np.float32))
    if inputs.dim() == 4 and getattr(model, "modelcycle_channels_last", False):
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return model(inputs).exp_().numpy()
