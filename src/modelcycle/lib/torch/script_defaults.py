"""PyTorch's default SageMaker handlers for a script-mode model's ``inference.py``.

As SageMaker's PyTorch inference toolkit (``DefaultPytorchInferenceHandler``) defines them:

* ``model_fn``: a TorchScript model, ``model.pt`` or the one ``.pt``/``.pth`` file at the top of
  the model directory, loaded with ``torch.jit.load`` on the CPU; offered only when that file is
  TorchScript (a state dict needs the user's own ``model_fn``, which builds the network);
* ``input_fn``: the toolkit's JSON/CSV/NPY decoding, then a tensor (float32 for JSON and CSV);
* ``predict_fn``: ``model(torch.as_tensor(data))`` in eval mode under ``torch.no_grad()``;
* ``output_fn``: the tensor as numpy, encoded as JSON/CSV/NPY.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from modelcycle.core.serving import script_codecs
from modelcycle.core.serving.codecs import NPY, media_type

__all__ = ["default_handlers", "input_fn", "predict_fn", "output_fn"]

TORCHSCRIPT_FILE = "model.pt"


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (a zip with ``constants.pkl``), not a ``torch.save``d state dict."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _torchscript_file(model_dir: Path) -> Path | None:
    """``model.pt``, else the one ``.pt``/``.pth`` file, when it is TorchScript."""
    preferred = model_dir / TORCHSCRIPT_FILE
    candidates = [preferred] if preferred.is_file() else [
        p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".pt", ".pth")]
    return candidates[0] if len(candidates) == 1 and _is_torchscript(candidates[0]) else None


def input_fn(body: bytes, content_type: str) -> torch.Tensor:
    """Decode like the toolkit, then a tensor: float32 from JSON/CSV, the array's dtype from NPY."""
    array = script_codecs.decode(body, content_type)
    if media_type(content_type) == NPY:
        return torch.from_numpy(np.ascontiguousarray(array))
    return torch.as_tensor(np.asarray(array, dtype=np.float32))


def predict_fn(data: Any, model: Any) -> Any:
    """``model(torch.as_tensor(data))`` in eval mode, without gradients."""
    with torch.no_grad():
        if hasattr(model, "eval"):
            model.eval()
        return model(torch.as_tensor(data))


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """A tensor (or anything array-like) encoded as JSON/CSV/NPY."""
    return script_codecs.encode(prediction, accept)


def default_handlers(model_dir: Path) -> dict[str, Callable[..., Any]]:
    """The defaults for ``model_dir``; ``model_fn`` only when it holds a TorchScript file."""
    handlers: dict[str, Callable[..., Any]] = {"input_fn": input_fn, "predict_fn": predict_fn, "output_fn": output_fn}
    path = _torchscript_file(Path(model_dir))
    if path is not None:
        handlers["model_fn"] = lambda _model_dir: torch.jit.load(str(path), map_location="cpu")
    return handlers
