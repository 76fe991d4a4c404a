"""The ``model:`` section of the torch frameworks (``pytorch``, ``lightning``); imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PytorchModelConfig"]


class PytorchModelConfig(BaseModel):
    """Which network to build and its sizes.

    ``cnn`` is the seeds' ConvNet (``hidden_channels`` is the seed 004 sweep parameter), ``fc``
    the fully connected net (``hidden_size``), ``cifar`` the CIFAR-10 tutorial CNN.
    """

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["cnn", "fc", "cifar"] = "cnn"
    hidden_channels: int = Field(default=20, gt=0)
    kernel_size: int = Field(default=5, gt=0)
    fc_size: int = Field(default=50, gt=0)
    dropout: float = Field(default=0.5, ge=0, lt=1)
    hidden_size: int = Field(default=64, gt=0)
