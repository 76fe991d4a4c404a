"""The ``fashion-mnist`` dataset plugin: Zalando's clothing images, MNIST's format and sizes
(28x28 grayscale, 60,000 train and 10,000 test, ten classes). The ``data:`` section takes
``path``; no ``options``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelcycle.core.datasets import Dataset
from modelcycle.core.markers import hookimpl
from modelcycle.datasets._download import locate, settings_path
from modelcycle.datasets._idx import IdxLayout, load_idx_dataset

NAME = "fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LAYOUT = IdxLayout(NAME)


@hookimpl
def dataset_locate(settings: Any, download: bool) -> Path:
    return locate(LAYOUT, settings_path(NAME, settings), download)


@hookimpl
def dataset_load(location: Path) -> Dataset:
    return load_idx_dataset(LAYOUT, location, CLASSES)
