"""What the serving handlers know about the model they serve."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.artifacts import Manifest

__all__ = ["ServingContext"]


@dataclass(frozen=True)
class ServingContext:
    """Passed to every serving hook; built once per process from the artifact's manifest."""

    manifest: Manifest
    model_dir: Path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.manifest.input_schema.shape
        return (c, h, w)

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Apply the training-time preprocessing to raw ``(N, C, H, W)`` pixels (float32)."""
        return self.manifest.preprocessing.apply(raw)
