"""CIFAR-10's python batches: safe unpickling, safe extraction of the download, loading."""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from modelcycle.core.datasets import Dataset, Split
from modelcycle.core.errors import DatasetIntegrityError
from modelcycle.datasets._download import FIX, Layout
from modelcycle.datasets._idx import readonly

__all__ = ["CIFAR_DIR", "CIFAR_FILES", "CIFAR_TAR", "CifarLayout", "load_cifar_dataset", "read_cifar10"]

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TAR = "cifar-10-python.tar.gz"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need; anything else is refused."""

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> object:
        try:
            from numpy._core import multiarray, numeric
        except ImportError:  # numpy < 2
            from numpy.core import multiarray, numeric  # type: ignore[no-redef]

        allowed: dict[tuple[str, str], object] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles spell bytes
        }
        for package in ("numpy.core", "numpy._core"):
            allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
            if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles of arrays
                allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise DatasetIntegrityError(
            f"{self._path}: refusing to unpickle global '{module}.{name}' — CIFAR-10 batches hold only "
            f"numpy arrays, so the file is corrupt or malicious; {FIX}")


def _read_batch(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one batch safely; return its channel-major ``(N, 3072)`` data and int64 labels."""
    try:
        batch = _SafeUnpickler(raw, path).load()
    except DatasetIntegrityError:
        raise
    except Exception as exc:  # any unpickling failure means a bad file
        raise DatasetIntegrityError(f"{path}: cannot unpickle CIFAR-10 batch ({exc!r}); {FIX}") from None
    if not isinstance(batch, dict):
        raise DatasetIntegrityError(f"{path}: expected a pickled dict, got {type(batch).__name__}; {FIX}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    data = np.asarray(data) if data is not None else None
    if data is None or not hasattr(labels, "__len__") or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise DatasetIntegrityError(
            f"{path}: a CIFAR-10 batch needs b'data' uint8 (N, 3072) and N b'labels'; {FIX}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        labels = np.full(1, -1)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DatasetIntegrityError(f"{path}: CIFAR-10 labels must be integers in 0..9; {FIX}")
    return data, labels


def _to_split(batches: list[tuple[np.ndarray, np.ndarray]]) -> Split:
    data = np.concatenate([b[0] for b in batches])
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # RRR..GGG..BBB -> HWC
    return Split(readonly(images), readonly(np.concatenate([b[1] for b in batches])))


def _extract(archive: Path, cache: Path) -> None:
    """Extract the tarball's ``cifar-10-batches-py/`` into ``cache``, refusing unsafe members."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                if m.name.startswith(("/", "\\")) or os.path.isabs(m.name) or ".." in Path(m.name).parts \
                        or not (m.isfile() or m.isdir()):
                    raise DatasetIntegrityError(
                        f"{archive}: refusing unsafe archive member '{m.name}' (absolute path, '..' or "
                        f"link/device); {FIX}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **kwargs)
        if missing := CifarLayout().missing(staging / CIFAR_DIR):
            raise DatasetIntegrityError(f"{archive}: archive lacks {', '.join(missing)}; {FIX}")
        shutil.rmtree(cache / CIFAR_DIR, ignore_errors=True)
        os.replace(staging / CIFAR_DIR, cache / CIFAR_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class CifarLayout(Layout):
    """The six python batches, directly in a directory or in its ``cifar-10-batches-py/``;
    a download fetches the tarball and extracts that directory."""

    name = "cifar10"

    def missing(self, directory: Path) -> list[str]:
        return [f for f in CIFAR_FILES if not (directory / f).is_file()]

    def needed(self) -> str:
        return ", ".join(CIFAR_FILES)

    def candidates(self, directory: Path) -> list[Path]:
        return [directory, directory / CIFAR_DIR]

    def downloads(self, cache: Path) -> list[str]:
        return [CIFAR_TAR]

    def unpack(self, cache: Path) -> Path:
        try:
            _extract(cache / CIFAR_TAR, cache)
        finally:
            (cache / CIFAR_TAR).unlink(missing_ok=True)
        return cache / CIFAR_DIR


def _batches_dir(directory: Path) -> Path:
    layout = CifarLayout()
    nested = directory / CIFAR_DIR
    return nested if layout.missing(directory) and not layout.missing(nested) else directory


def _read(directory: Path, checksums: dict[str, str]) -> tuple[Split, Split]:
    directory = _batches_dir(directory)
    batches = []
    for name in CIFAR_FILES:
        path = directory / name
        raw = path.read_bytes()
        checksums[name] = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        batches.append(_read_batch(raw, path))
    return _to_split(batches[:5]), _to_split(batches[5:])


def read_cifar10(directory: Path) -> tuple[Split, Split]:
    """Read the CIFAR-10 python batches from ``directory`` or its ``cifar-10-batches-py/`` child.

    Returns:
        ``(train, test)`` with images uint8 ``(N, 32, 32, 3)`` and labels int64.

    Raises:
        DatasetIntegrityError: a batch is corrupt, malformed, or pickles anything but arrays.
    """
    return _read(Path(directory), {})


def load_cifar_dataset(directory: Path, classes: tuple[str, ...]) -> Dataset:
    """Load CIFAR-10 from ``directory`` with the md5 of every batch as lineage."""
    checksums: dict[str, str] = {}
    train, test = _read(directory, checksums)
    return Dataset("cifar10", train, test, classes, directory, checksums)
