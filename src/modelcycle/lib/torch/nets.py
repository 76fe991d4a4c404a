"""The torch networks of the PyTorch and Lightning plugins: the seeds' MNIST ConvNet, an FC net
and a CIFAR-10 CNN, and :func:`build_net`, which picks one from the ``model:`` options.

Every network takes a float tensor of shape ``(N, C, H, W)`` (already normalised; the FC net
also takes encoded tabular records ``(N, W)``) and returns log-probabilities of shape
``(N, num_classes)``. :func:`build_net_for` picks by the input shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modelcycle.core.errors import ConfigError
from modelcycle.lib.torch.config import PytorchModelConfig

__all__ = ["ConvNet", "FCNet", "CifarNet", "build_net", "build_net_for"]


def _sides(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of an image size given as one side (square) or ``(H, W)``."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


class ConvNet(nn.Module):
    """The seeds' 2-conv MNIST CNN: conv 1→10 k5, conv 10→20 k5, Dropout2d, fc 320→50→10.

    ``hidden_channels`` (the seed ``004`` sweep parameter) sets the second conv's width; the
    default 20 reproduces the seed's summary (260 / 5,020 / 16,050 / 510 parameters).
    ``dropout`` is the fc layer's dropout, ``conv_dropout`` the channel dropout (Dropout2d) on the
    second conv's output; both default to the seed's 0.5.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        conv1_channels: int = 10,
        hidden_channels: int = 20,
        kernel_size: int = 5,
        fc_size: int = 50,
        dropout: float = 0.5,
        image_size: int | Sequence[int] = 28,
        conv_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1_channels, kernel_size=kernel_size)
        self.conv2 = nn.Conv2d(conv1_channels, hidden_channels, kernel_size=kernel_size)
        self.conv2_drop = nn.Dropout2d(p=conv_dropout)
        height, width = _sides(image_size)
        h, w = (((s - kernel_size + 1) // 2 - kernel_size + 1) // 2 for s in (height, width))
        if h < 1 or w < 1:
            raise ValueError(f"images of {height}x{width} are too small for the cnn (kernel {kernel_size}): "
                             f"need at least {4 * kernel_size - 2} pixels a side; resize them (image_size)")
        self.flat_features = hidden_channels * h * w
        self.fc1 = nn.Linear(self.flat_features, fc_size)
        self.fc2 = nn.Linear(fc_size, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


class FCNet(nn.Module):
    """A fully connected net (the seed's ``--model fc``): flatten → hidden → hidden → classes."""

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        hidden_size: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.layers(x), dim=1)


class CifarNet(nn.Module):
    """The PyTorch-tutorial CIFAR-10 CNN of seed ``002``: conv 3→6 k5, conv 6→16 k5, fc 400→120→84→10."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int | Sequence[int] = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        h, w = (((s - 4) // 2 - 4) // 2 for s in _sides(image_size))
        if h < 1 or w < 1:
            raise ValueError(f"images of {image_size} are too small for the cifar net: need at least 18 "
                             "pixels a side; resize them (image_size)")
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


def build_net(config: PytorchModelConfig, channels: int, side: int | Sequence[int], num_classes: int) -> nn.Module:
    """The network ``config.architecture`` names, for ``channels`` images of ``side`` (one side
    of a square, or ``(H, W)``) and ``num_classes`` classes (unseeded: callers seed torch first
    when weights must reproduce)."""
    height, width = _sides(side)
    if config.architecture == "cnn":
        return ConvNet(
            in_channels=channels,
            num_classes=num_classes,
            hidden_channels=config.hidden_channels,
            kernel_size=config.kernel_size,
            fc_size=config.fc_size,
            dropout=config.dropout,
            image_size=(height, width),
            conv_dropout=config.conv_dropout,
        )
    if config.architecture == "fc":
        return FCNet(in_features=channels * height * width, num_classes=num_classes, hidden_size=config.hidden_size)
    return CifarNet(in_channels=channels, num_classes=num_classes, image_size=(height, width))


def build_net_for(config: PytorchModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network ``config.architecture`` names for inputs of ``input_shape``: ``(C, H, W)``
    images (see :func:`build_net`), or ``(W,)`` encoded tabular records, which only ``fc`` takes.

    Raises:
        ConfigError: an image network (``cnn``, ``cifar``) for tabular records.
    """
    if len(input_shape) == 1:
        if config.architecture != "fc":
            raise ConfigError(
                f"model.architecture {config.architecture} needs images, but the data set holds tabular "
                f"records ({input_shape[0]} encoded columns); use architecture: fc or your own model class")
        return FCNet(in_features=input_shape[0], num_classes=num_classes, hidden_size=config.hidden_size)
    channels, *side = input_shape
    return build_net(config, channels, side, num_classes)
