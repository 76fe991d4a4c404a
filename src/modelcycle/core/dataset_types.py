"""What a dataset plugin returns: a :class:`Dataset` of two :class:`Split` objects held in memory.

Two kinds of data share these types:

* **images**: ``Split.images`` is uint8 ``(N, H, W)`` or ``(N, H, W, C)`` raw pixels, any size and
  channel count; ``Dataset.features`` is empty.
* **tabular records**: ``Dataset.features`` names each column (:class:`Feature`) and
  ``Split.images`` is float32 ``(N, F)``: one column per feature in that order, a numerical
  feature's raw value, a categorical feature's category index into ``Feature.categories``.

A leaf module (numpy only), so the hook specifications can name these types without importing
the dataset dispatcher or the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["Dataset", "Feature", "Split"]


@dataclass(frozen=True)
class Feature:
    """One column of tabular data.

    Attributes:
        name: the column's name, as clients send it in ``fields``.
        kind: ``numerical`` (a float) or ``categorical`` (one of ``categories``).
        categories: a categorical feature's values (as text), index = the code stored in the
            split's column; empty for a numerical feature.
    """

    name: str
    kind: Literal["numerical", "categorical"] = "numerical"
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "categorical" and not self.categories:
            raise ValueError(f"categorical feature '{self.name}' has no categories")
        if self.kind == "numerical" and self.categories:
            raise ValueError(f"numerical feature '{self.name}' cannot have categories")


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``images`` uint8 ``(N, H, W)`` or ``(N, H, W, C)`` (tabular: float32 ``(N, F)``,
    see the module docstring), ``labels`` int64 ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.shape[:1] != self.labels.shape:
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, n: int) -> Split:
        """Return the first ``min(n, len(self))`` records as views (no copy). ``n`` must be >= 0."""
        if n < 0:
            raise ValueError(f"take(n) needs n >= 0, got {n}")
        return Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset with its lineage, as a dataset plugin's ``dataset_load`` returns it.

    Attributes:
        name: the dataset's name (its plugin's entry-point name).
        train, test: the two splits.
        classes: the class names, index = label.
        source: the directory the files were read from.
        checksums: md5 of every file read, keyed by its path relative to ``source``; recorded in
            the model's manifest as lineage, and the files whose sizes and mtimes the in-process
            cache checks.
        features: the columns of tabular data, in the splits' column order; empty for images.
    """

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    source: Path
    checksums: dict[str, str]
    features: tuple[Feature, ...] = ()

    def __post_init__(self) -> None:
        if self.features and (self.train.images.ndim != 2 or self.train.images.shape[1] != len(self.features)):
            raise ValueError(f"{len(self.features)} features but train records of shape {self.train.images.shape}")

    @property
    def tabular(self) -> bool:
        """True for tabular records (``features`` named), False for images."""
        return bool(self.features)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one record: ``(28, 28)`` or ``(32, 32, 3)``; tabular ``(F,)``."""
        return tuple(self.train.images.shape[1:])

    @property
    def channels(self) -> int:
        """Number of colour channels (1 for 2-D images); tabular: the number of features."""
        shape = self.image_shape
        return 1 if len(shape) == 2 else int(shape[-1])

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel ``(mean, std)`` of the train images scaled to [0, 1]; computed once, exact
        sums. Tabular: per-feature ``(mean, std)`` of the raw train values (categorical columns
        get ``(0.0, 1.0)``: they are one-hot encoded, not standardised)."""
        return self._normalization

    @cached_property
    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.tabular:
            values = self.train.images.astype(np.float64)
            mean, std = values.mean(axis=0), values.std(axis=0)
            std[std == 0] = 1.0
            numerical = np.array([f.kind == "numerical" for f in self.features])
            mean, std = np.where(numerical, mean, 0.0), np.where(numerical, std, 1.0)
            return tuple(float(m) for m in mean), tuple(float(s) for s in std)
        flat = self.train.images.reshape(-1, self.channels)
        total = np.zeros(flat.shape[1], np.uint64)
        squares = np.zeros(flat.shape[1], np.uint64)
        for start in range(0, flat.shape[0], 1 << 16):  # cache-sized chunks; uint16 holds 255**2
            chunk = np.ascontiguousarray(flat[start:start + (1 << 16)].T)  # (channels, pixels)
            total += chunk.sum(axis=1, dtype=np.uint64)
            squares += np.square(chunk, dtype=np.uint16).sum(axis=1, dtype=np.uint64)
        n = max(flat.shape[0], 1)
        mean = total.astype(np.float64) / n / 255.0
        var = np.maximum(squares.astype(np.float64) / n / 255.0**2 - mean**2, 0.0)
        return tuple(float(m) for m in mean), tuple(float(s) for s in np.sqrt(var))
