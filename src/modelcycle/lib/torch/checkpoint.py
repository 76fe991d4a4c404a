"""Torch training checkpoints shared by the PyTorch and Lightning plugins: one ``torch.save``
file per checkpoint, read back with ``weights_only=True`` (tensors, numbers, strings and
containers only; never pickled code).

What goes in: the network's ``state_dict``, the optimizer's and scheduler's states (from
``context.state``), torch's global RNG state (dropout) and the state of the data-order generator
``context.state["generator"]``. The core adds the epoch, history and Python/NumPy RNG states and
commits the directory atomically (:mod:`modelcycle.core.checkpoints`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.training import TrainingContext

__all__ = ["STATE_FILE", "RNG_FILE", "save_training_state", "load_training_state", "rng_state", "restore_rng_state"]

#: the whole training state of the PyTorch plugin
STATE_FILE = "training_state.pt"
#: torch's RNG states alone (Lightning, whose own checkpoint holds the rest)
RNG_FILE = "rng_state.pt"


def rng_state(context: TrainingContext) -> dict[str, Any]:
    """Torch's global RNG state and the data-order generator's (when ``fit`` keeps one)."""
    generator = context.state.get("generator")
    return {"torch": torch.get_rng_state(), "generator": generator.get_state() if generator is not None else None}


def restore_rng_state(state: dict[str, Any], context: TrainingContext) -> None:
    torch.set_rng_state(state["torch"])
    generator = context.state.get("generator")
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def save_training_state(model: torch.nn.Module, directory: Path, context: TrainingContext) -> list[str]:
    """Write :data:`STATE_FILE` into ``directory``; returns ``[STATE_FILE]``."""
    scheduler = context.state.get("scheduler")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": context.state["optimizer"].state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(context),
        },
        Path(directory) / STATE_FILE,
    )
    return [STATE_FILE]


def load_training_state(model: torch.nn.Module, directory: Path, context: TrainingContext) -> bool:
    """Restore what :func:`save_training_state` wrote into ``model`` and ``context.state``."""
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    context.state["optimizer"].load_state_dict(state["optimizer"])
    scheduler = context.state.get("scheduler")
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"], context)
    return True
