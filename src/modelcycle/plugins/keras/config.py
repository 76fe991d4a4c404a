"""The ``model:`` section for ``framework: keras`` (imports no TensorFlow)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KerasModelConfig"]


class KerasModelConfig(BaseModel):
    """Which network to build and its sizes.

    ``cnn`` is the seed's Keras MNIST CNN: Conv2D ``conv1_filters`` 3×3 → Conv2D
    ``conv2_filters`` 3×3 → MaxPool 2 → Dropout ``dropout_1`` → Flatten → Dense ``dense_units``
    → Dropout ``dropout_2`` → Dense softmax. The defaults reproduce the seed's summary
    (320 / 18,496 / 1,179,776 / 1,290 parameters, 1,199,882 in total).

    ``fc`` is a fully connected net (an MLP) for tabular records (or flattened images): Dense
    ``dense_units`` → Dropout ``dropout_2`` → Dense ``dense_units`` → Dense softmax.
    """

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["cnn", "fc"] = "cnn"
    conv1_filters: int = Field(default=32, gt=0)
    conv2_filters: int = Field(default=64, gt=0)
    dense_units: int = Field(default=128, gt=0)
    dropout_1: float = Field(default=0.25, ge=0, lt=1)
    dropout_2: float = Field(default=0.25, ge=0, lt=1)
