"""The ``model:`` section for ``framework: lightning`` (imports no torch).

Lightning trains the PyTorch plugin's networks, so it validates ``model:`` with the PyTorch
plugin's own class: the same keys (``architecture: cnn | fc | cifar``, ``hidden_channels``, ...)
and the same artifact, which the PyTorch serving code rebuilds from the manifest.
"""

from __future__ import annotations

from modelcycle.plugins.pytorch.config import PytorchModelConfig

__all__ = ["PytorchModelConfig"]
