"""IDX files (the MNIST format) and the loader of the MNIST-shaped datasets built on them."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from modelcycle.core.datasets import Dataset, Split
from modelcycle.core.errors import DatasetIntegrityError
from modelcycle.datasets._download import FIX, KNOWN_MD5, Layout

__all__ = ["IDX_FILES", "IdxLayout", "load_idx_dataset", "parse_idx", "read_idx", "readonly"]

#: The four files of an MNIST-shaped dataset (each may be stored with or without ``.gz``).
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def readonly(array: np.ndarray) -> np.ndarray:
    """Mark ``array`` read-only (loaded datasets are shared by every caller) and return it."""
    array.flags.writeable = False
    return array


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Parse the bytes of an IDX file (gzip detected by content) read from ``path``."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = zlib.decompress(raw, 31)
        except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise DatasetIntegrityError(f"{path}: corrupt or truncated gzip data ({exc}); {FIX}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DatasetIntegrityError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'}); {FIX}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetIntegrityError(f"{path}: truncated IDX header; {FIX}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetIntegrityError(
            f"{path}: IDX dims {dims} need {expected} bytes but the file holds {len(raw)} "
            f"(truncated or corrupt); {FIX}")
    array = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip detected by content) into a read-only array.

    Raises:
        DatasetIntegrityError: naming the file when the gzip stream, magic, dtype or size is wrong.
    """
    path = Path(path)
    return parse_idx(path.read_bytes(), path)


class IdxLayout(Layout):
    """The four IDX files, each present with or without ``.gz``; downloads fetch the ``.gz``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def missing(self, directory: Path) -> list[str]:
        return [f + ".gz" for f in IDX_FILES
                if not (directory / (f + ".gz")).is_file() and not (directory / f).is_file()]

    def needed(self) -> str:
        return ", ".join(f + ".gz" for f in IDX_FILES) + " (the same names without .gz also work)"

    def files(self, directory: Path) -> list[Path]:
        """The four files to read, the ``.gz`` one where both exist."""
        return [directory / (f + ".gz") if (directory / (f + ".gz")).is_file() else directory / f
                for f in IDX_FILES]


def load_idx_dataset(layout: IdxLayout, directory: Path, classes: tuple[str, ...]) -> Dataset:
    """Load train and test splits from ``directory``, checking files with a known md5.

    Raises:
        DatasetIntegrityError: a file fails its md5, is not IDX, or images and labels disagree.
    """
    name = layout.name
    checksums: dict[str, str] = {}
    arrays = []
    for path in layout.files(directory):
        raw = path.read_bytes()
        actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        expected = KNOWN_MD5.get(name, {}).get(path.name)
        if expected is not None and actual != expected:
            raise DatasetIntegrityError(
                f"{path}: md5 {actual} but {name}'s {path.name} has md5 {expected} (corrupt, or a file of "
                f"another dataset); {FIX}")
        checksums[path.name] = actual
        arrays.append(parse_idx(raw, path))
    splits = []
    for images, labels, which in ((arrays[0], arrays[1], "train"), (arrays[2], arrays[3], "t10k")):
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 \
                or len(labels) != len(images) \
                or (len(labels) and (labels.min() < 0 or labels.max() >= len(classes))):
            raise DatasetIntegrityError(
                f"{directory}: {which} images {images.shape} {images.dtype} do not match labels "
                f"{labels.shape} in 0..{len(classes) - 1}; {FIX}")
        splits.append(Split(images, readonly(labels.astype(np.int64))))
    return Dataset(name, splits[0], splits[1], classes, directory, checksums)
