"""The ``cifar10`` dataset plugin: 32x32 colour images in ten classes, 50,000 train and 10,000
test, from the python batches (directly in a directory or in its ``cifar-10-batches-py/``) or
the official tarball, extracted safely. The ``data:`` section takes ``path``; no ``options``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelcycle.core.datasets import Dataset
from modelcycle.core.markers import hookimpl
from modelcycle.datasets._cifar import CifarLayout, load_cifar_dataset
from modelcycle.datasets._download import locate, settings_path

NAME = "cifar10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LAYOUT = CifarLayout()


@hookimpl
def dataset_locate(settings: Any, download: bool) -> Path:
    return locate(LAYOUT, settings_path(NAME, settings), download)


@hookimpl
def dataset_load(location: Path) -> Dataset:
    return load_cifar_dataset(location, CLASSES)
