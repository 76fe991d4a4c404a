"""The ``model:`` section for ``framework: pytorch`` (imports no torch): the torch library's
:class:`~modelcycle.lib.torch.config.PytorchModelConfig`, which the Lightning plugin shares."""

from __future__ import annotations

from modelcycle.lib.torch.config import PytorchModelConfig

__all__ = ["PytorchModelConfig"]
