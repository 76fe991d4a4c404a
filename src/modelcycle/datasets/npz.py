"""The ``npz`` dataset plugin: a user's arrays in one ``.npz`` file (``numpy.savez``).

``data: {dataset: npz, path: data.npz}`` (or a directory holding exactly one ``.npz``). The file
holds ``x_train, y_train, x_test, y_test`` and optionally ``classes`` (names, index = label).
Images are ``(N, H, W)`` or ``(N, H, W, C)``: uint8 as is, floats in 0..1 are scaled by 255,
floats in 0..255 rounded (see :mod:`modelcycle.datasets._arrays`). Labels are class indices, or
strings mapped to the sorted class names. 2-D ``x`` of shape ``(N, F)`` holds feature vectors:
the dataset is then tabular, every feature numerical, named by an optional ``feature_names``
array, else ``f0 .. f{F-1}``. Lineage: the file's md5. No ``options``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.core.datasets import Dataset, md5sum
from modelcycle.core.errors import DatasetIntegrityError, DatasetNotFoundError
from modelcycle.core.markers import hookimpl
from modelcycle.datasets._arrays import from_arrays
from modelcycle.datasets._download import settings_path

NAME = "npz"


@hookimpl
def dataset_locate(settings: Any, download: bool) -> Path:
    path = settings_path(NAME, settings)
    if path is None:
        raise DatasetNotFoundError(
            "dataset 'npz' needs data.path: the .npz file holding x_train, y_train, x_test, y_test")
    file = Path(path).expanduser()
    if file.is_dir():
        found = sorted(file.glob("*.npz"))
        if len(found) != 1:
            raise DatasetNotFoundError(
                f"dataset 'npz': {file} holds {len(found)} .npz files ({', '.join(f.name for f in found) or 'none'}); "
                "set data.path to the file itself")
        file = found[0]
    if not file.is_file():
        raise DatasetNotFoundError(f"dataset 'npz': {file} does not exist; set data.path to your .npz file")
    return file


@hookimpl
def dataset_load(location: Path, settings: Any) -> Dataset:
    try:
        with np.load(location, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetIntegrityError(
            f"{location}: not a readable .npz of plain arrays ({exc}); save it with numpy.savez "
            "(object arrays are refused: give class names as a string array)") from None
    return from_arrays(NAME, arrays, location.parent, {location.name: md5sum(location)}, str(location))
