"""The ``model:`` section for ``framework: lightning`` (imports no torch).

Lightning trains the torch library's networks, so it validates ``model:`` with the same class as
the PyTorch plugin: the same keys (``architecture: cnn | fc | cifar``, ``hidden_channels``, ...)
and the same artifact, which the shared serving handlers rebuild from the manifest.
"""

from __future__ import annotations

from modelcycle.lib.torch.config import PytorchModelConfig

__all__ = ["PytorchModelConfig"]
