"""What the serving handlers know about the model they serve."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.artifacts import InputSchema, Manifest

__all__ = ["ServingContext"]


@dataclass(frozen=True)
class ServingContext:
    """Passed to every serving hook; built once per process from the artifact's manifest."""

    manifest: Manifest
    model_dir: Path

    @property
    def schema(self) -> InputSchema:
        """The manifest's input schema: what one record looks like (image or tabular)."""
        return self.manifest.input_schema

    @property
    def tabular(self) -> bool:
        """True when the model takes tabular records with named fields."""
        return self.manifest.input_schema.kind == "tabular"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one record: ``(C, H, W)`` of an image (any size and channel count), ``(F,)``
        of a tabular record."""
        return tuple(self.manifest.input_schema.shape)

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Apply the training-time preprocessing to raw ``(N, C, H, W)`` pixels or raw ``(N, F)``
        tabular records (float32)."""
        return self.manifest.preprocessing.apply(raw)
