"""The ``sklearn-digits`` dataset plugin: scikit-learn's bundled handwritten digits.

The file is the one ``sklearn.datasets.load_digits`` reads (``digits.csv.gz``: 1,797 rows of 64
pixel values in 0..16 and the label); nothing is downloaded. Images are ``(N, 8, 8)`` uint8 scaled
to 0..255. The split is fixed and stratified: the first, sixth, eleventh... record of each
digit (in file order) is a test record (364 in all), the others train (1,433). ``data.path``
may name the file or a directory holding it; the dataset takes no ``options``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle import hookimpl
from modelcycle.core.datasets import Dataset, Split
from modelcycle.core.errors import ConfigError, DatasetIntegrityError, DatasetNotFoundError

NAME = "sklearn-digits"
DATA_FILE = "digits.csv.gz"
CLASSES = tuple(str(i) for i in range(10))
TEST_EVERY = 5
SIDE = 8


def bundled_file() -> Path | None:
    """Where scikit-learn keeps ``digits.csv.gz`` (found without importing scikit-learn)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / DATA_FILE


@hookimpl
def dataset_locate(settings: Any) -> Path:
    """The explicit ``data.path`` (the file, or a directory holding it), else scikit-learn's copy."""
    if options := getattr(settings, "options", None):
        raise ConfigError(f"data.options: dataset '{NAME}' takes no options, got {', '.join(sorted(options))}")
    if (path := getattr(settings, "path", None)) is not None:
        given = Path(path).expanduser()
        candidate = given / DATA_FILE if given.is_dir() else given
        if candidate.is_file():
            return candidate
        raise DatasetNotFoundError(f"dataset '{NAME}': the given path {given} holds no {DATA_FILE}")
    bundled = bundled_file()
    if bundled is not None and bundled.is_file():
        return bundled
    raise DatasetNotFoundError(
        f"dataset '{NAME}' needs {DATA_FILE} from scikit-learn, looked in {bundled or 'no scikit-learn'}: "
        "pip install scikit-learn, or set data.path to a copy of the file")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@hookimpl
def dataset_load(location: Path) -> Dataset:
    """Read the CSV, check its shape and values, scale the pixels and split."""
    raw = location.read_bytes()
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetIntegrityError(f"{location}: not a gzip CSV of digits ({exc}); replace it with scikit-learn's copy") from None
    pixels, labels = table[:, :-1], table[:, -1]
    if table.shape[1] != SIDE * SIDE + 1 or not len(table) or pixels.min() < 0 or pixels.max() > 16 \
            or not np.array_equal(labels, labels.round()) or labels.min() < 0 or labels.max() > 9:
        raise DatasetIntegrityError(
            f"{location}: expected rows of {SIDE * SIDE} pixels in 0..16 and a label in 0..9, got shape {table.shape}")
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, SIDE, SIDE)
    labels = labels.astype(np.int64)
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(len(CLASSES)):  # stratified: every fifth record of each class
        test[np.flatnonzero(labels == digit)[::TEST_EVERY]] = True
    return Dataset(
        name=NAME,
        train=Split(_readonly(images[~test]), _readonly(labels[~test])),
        test=Split(_readonly(images[test]), _readonly(labels[test])),
        classes=CLASSES,
        source=location.parent,
        checksums={location.name: hashlib.md5(raw, usedforsecurity=False).hexdigest()},
    )
