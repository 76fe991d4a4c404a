"""Locate, download, verify and load the benchmark image datasets (MNIST, Fashion-MNIST, CIFAR-10).

Look-up order for a dataset's directory (:func:`locate_dataset`):

1. an explicit ``path`` (never falls through: missing files there are an error);
2. ``$MODELCYCLE_DATA_DIR/<name>/`` or ``$MODELCYCLE_DATA_DIR`` itself;
3. the user cache: ``$MODELCYCLE_CACHE_DIR/<name>`` if set, else
   ``$XDG_CACHE_HOME/modelcycle/datasets/<name>``, else ``~/.cache/modelcycle/datasets/<name>``;
4. a download into the user cache, mirror by mirror (``$MODELCYCLE_DATASET_MIRROR`` first), each
   file verified against :data:`KNOWN_MD5` before an atomic rename;
5. otherwise :class:`DatasetNotFoundError` naming the files needed and the places looked at.

Loaded datasets are cached in-process, keyed by (name, directory, file mtimes and sizes); their
arrays are read-only because the same objects are shared by every caller.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import threading
import urllib.request
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from modelcycle.core.errors import DatasetIntegrityError, DatasetNotFoundError

__all__ = [
    "DATASET_NAMES",
    "KNOWN_MD5",
    "MIRRORS",
    "Dataset",
    "Split",
    "clear_cache",
    "load_dataset",
    "locate_dataset",
    "md5sum",
    "read_cifar10",
    "read_idx",
]

log = logging.getLogger(__name__)

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10")

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TAR = "cifar-10-python.tar.gz"
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

#: Expected md5 of every file a download fetches (and of the ``.gz`` files when loaded).
KNOWN_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {_CIFAR_TAR: "c58f30108f718f92721af3b95e74349a"},
}

#: Public mirrors (base URLs; a file's URL is base + file name), tried in order.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}

_CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
}

_CHUNK = 1 << 20
_TIMEOUT = 30.0
_FIX = "delete the file and load again to re-download it (or replace it with a good copy)"


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``images`` uint8 ``(N, H, W)`` or ``(N, H, W, C)``, ``labels`` int64 ``(N,)``."""

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
    """A loaded dataset with its lineage (``source`` directory and md5 of every file read)."""

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    source: Path
    checksums: dict[str, str]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image: ``(28, 28)`` or ``(32, 32, 3)``."""
        return tuple(self.train.images.shape[1:])

    @property
    def channels(self) -> int:
        """Number of colour channels (1 for 2-D images)."""
        shape = self.image_shape
        return 1 if len(shape) == 2 else int(shape[-1])

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel ``(mean, std)`` of the train images scaled to [0, 1]; computed once, exact sums."""
        return self._normalization

    @cached_property
    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = zlib.decompress(raw, 31)
        except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise DatasetIntegrityError(f"{path}: corrupt or truncated gzip data ({exc}); {_FIX}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DatasetIntegrityError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'}); {_FIX}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetIntegrityError(f"{path}: truncated IDX header; {_FIX}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetIntegrityError(
            f"{path}: IDX dims {dims} need {expected} bytes but the file holds {len(raw)} "
            f"(truncated or corrupt); {_FIX}")
    array = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip detected by content) into a read-only array.

    Raises:
        DatasetIntegrityError: naming the file when the gzip stream, magic, dtype or size is wrong.
    """
    path = Path(path)
    return _parse_idx(path.read_bytes(), path)


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
        import codecs

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
            f"numpy arrays, so the file is corrupt or malicious; {_FIX}")


def _read_cifar_batch(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one batch safely; return its channel-major ``(N, 3072)`` data and int64 labels."""
    try:
        batch = _SafeUnpickler(raw, path).load()
    except DatasetIntegrityError:
        raise
    except Exception as exc:  # any unpickling failure means a bad file
        raise DatasetIntegrityError(f"{path}: cannot unpickle CIFAR-10 batch ({exc!r}); {_FIX}") from None
    if not isinstance(batch, dict):
        raise DatasetIntegrityError(f"{path}: expected a pickled dict, got {type(batch).__name__}; {_FIX}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    data = np.asarray(data) if data is not None else None
    if data is None or not hasattr(labels, "__len__") or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise DatasetIntegrityError(
            f"{path}: a CIFAR-10 batch needs b'data' uint8 (N, 3072) and N b'labels'; {_FIX}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        labels = np.full(1, -1)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DatasetIntegrityError(f"{path}: CIFAR-10 labels must be integers in 0..9; {_FIX}")
    return data, labels


def _to_split(batches: list[tuple[np.ndarray, np.ndarray]]) -> Split:
    data = np.concatenate([b[0] for b in batches])
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # RRR..GGG..BBB -> HWC
    return Split(_readonly(images), _readonly(np.concatenate([b[1] for b in batches])))


def _cifar_dir(directory: Path) -> Path:
    nested = directory / _CIFAR_DIR
    return nested if _missing("cifar10", directory) and not _missing("cifar10", nested) else directory


def read_cifar10(directory: Path) -> tuple[Split, Split]:
    """Read the CIFAR-10 python batches from ``directory`` or its ``cifar-10-batches-py/`` child.

    Returns:
        ``(train, test)`` with images uint8 ``(N, 32, 32, 3)`` and labels int64.
    """
    return _read_cifar(Path(directory), {})


def _read_cifar(directory: Path, checksums: dict[str, str]) -> tuple[Split, Split]:
    directory = _cifar_dir(directory)
    batches = []
    for name in _CIFAR_FILES:
        path = directory / name
        raw = path.read_bytes()
        checksums[name] = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        batches.append(_read_cifar_batch(raw, path))
    return _to_split(batches[:5]), _to_split(batches[5:])


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = {"cifar-10": "cifar10", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist"}.get(key, key)
    if key not in DATASET_NAMES:
        raise DatasetNotFoundError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)}")
    return key


def _needed(name: str) -> list[str]:
    return list(_CIFAR_FILES) if name == "cifar10" else [f + ".gz" for f in _IDX_FILES]


def _missing(name: str, directory: Path) -> list[str]:
    """Files of ``name`` absent from ``directory`` (IDX files count when present with or without .gz)."""
    if name == "cifar10":
        return [f for f in _CIFAR_FILES if not (directory / f).is_file()]
    return [f + ".gz" for f in _IDX_FILES
            if not (directory / (f + ".gz")).is_file() and not (directory / f).is_file()]


def _files(name: str, directory: Path) -> list[Path]:
    if name == "cifar10":
        return [directory / f for f in _CIFAR_FILES]
    return [directory / (f + ".gz") if (directory / (f + ".gz")).is_file() else directory / f
            for f in _IDX_FILES]


def _with_nested(name: str, directory: Path) -> list[Path]:
    return [directory, directory / _CIFAR_DIR] if name == "cifar10" else [directory]


def _cache_dir(name: str) -> Path:
    if root := os.environ.get("MODELCYCLE_CACHE_DIR"):
        return Path(root).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "modelcycle" / "datasets" / name


def _mirrors(name: str) -> list[str]:
    override = os.environ.get("MODELCYCLE_DATASET_MIRROR", "").strip()
    bases = ([override.replace("{name}", name)] if override else []) + list(MIRRORS.get(name, ()))
    return [b if b.endswith("/") else b + "/" for b in bases]


def _fetch(url: str, target: Path, expected: str | None) -> None:
    """Download ``url`` to a temp file beside ``target``, check md5, then rename atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            while block := response.read(_CHUNK):
                digest.update(block)
                out.write(block)
        if expected is not None and digest.hexdigest() != expected:
            raise DatasetIntegrityError(f"md5 mismatch: expected {expected}, got {digest.hexdigest()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _extract_cifar(archive: Path, cache: Path) -> None:
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
                        f"link/device); {_FIX}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **kwargs)
        if missing := _missing("cifar10", staging / _CIFAR_DIR):
            raise DatasetIntegrityError(f"{archive}: archive lacks {', '.join(missing)}; {_FIX}")
        shutil.rmtree(cache / _CIFAR_DIR, ignore_errors=True)
        os.replace(staging / _CIFAR_DIR, cache / _CIFAR_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(name: str, cache: Path, failures: list[str]) -> bool:
    """Fetch the missing files of ``name`` into ``cache``; record each failed attempt in ``failures``."""
    wanted = [_CIFAR_TAR] if name == "cifar10" else _missing(name, cache)
    for file in wanted:
        for base in _mirrors(name):
            url = base + file
            try:
                log.info("downloading %s", url)
                _fetch(url, cache / file, KNOWN_MD5.get(name, {}).get(file))
                break
            except (OSError, ValueError, http.client.HTTPException, DatasetIntegrityError) as exc:
                failures.append(f"{url}: {exc}")
        else:
            return False
    if name == "cifar10":
        try:
            _extract_cifar(cache / _CIFAR_TAR, cache)
        finally:
            (cache / _CIFAR_TAR).unlink(missing_ok=True)
    return True


def locate_dataset(name: str, path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return the directory holding ``name``'s files, downloading them into the user cache if allowed.

    Raises:
        DatasetNotFoundError: the explicit ``path`` lacks files, or the files are nowhere and could not
            be downloaded; the message names the files needed and every place looked at.
        DatasetIntegrityError: a downloaded archive holds unsafe or missing members.
    """
    name = _canonical(name)
    if path is not None:
        explicit = Path(path).expanduser()
        for candidate in _with_nested(name, explicit):
            if not _missing(name, candidate):
                return candidate
        raise DatasetNotFoundError(
            f"dataset '{name}': the given path {explicit} lacks {', '.join(_missing(name, explicit))}")
    looked: list[Path] = []
    if data_dir := os.environ.get("MODELCYCLE_DATA_DIR"):
        base = Path(data_dir).expanduser()
        looked += _with_nested(name, base / name) + _with_nested(name, base)
    cache = _cache_dir(name)
    looked += _with_nested(name, cache)
    for candidate in looked:
        if not _missing(name, candidate):
            return candidate
    failures: list[str] = []
    if download and _download(name, cache, failures):
        return cache / _CIFAR_DIR if name == "cifar10" else cache
    how = "download disabled (download=False)" if not download else \
        "download failed: " + "; ".join(failures or ["no mirror configured"])
    raise DatasetNotFoundError(
        f"dataset '{name}' not found: need {', '.join(_needed(name))}"
        + ("" if name == "cifar10" else " (the same names without .gz also work)")
        + f"; looked in {', '.join(map(str, looked))}; {how}. Put the files in {cache} "
        f"or set MODELCYCLE_DATA_DIR to a directory holding {name}/")


_LOADED: dict[tuple[str, Path], tuple[tuple, Dataset]] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every dataset loaded in this process."""
    with _LOCK:
        _LOADED.clear()


def _load_idx(name: str, directory: Path, checksums: dict[str, str]) -> tuple[Split, Split]:
    arrays = []
    for path in _files(name, directory):
        raw = path.read_bytes()
        actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        expected = KNOWN_MD5[name].get(path.name)
        if expected is not None and actual != expected:
            raise DatasetIntegrityError(
                f"{path}: md5 {actual} but {name}'s {path.name} has md5 {expected} (corrupt, or a file of "
                f"another dataset); {_FIX}")
        checksums[path.name] = actual
        arrays.append(_parse_idx(raw, path))
    splits = []
    for images, labels, which in ((arrays[0], arrays[1], "train"), (arrays[2], arrays[3], "t10k")):
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 \
                or len(labels) != len(images) \
                or (len(labels) and (labels.min() < 0 or labels.max() >= len(_CLASSES[name]))):
            raise DatasetIntegrityError(
                f"{directory}: {which} images {images.shape} {images.dtype} do not match labels "
                f"{labels.shape} in 0..{len(_CLASSES[name]) - 1}; {_FIX}")
        splits.append(Split(images, _readonly(labels.astype(np.int64))))
    return splits[0], splits[1]


def load_dataset(name: str, path: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """Locate (see :func:`locate_dataset`), verify and load a dataset; cached in-process.

    A second call for unchanged files returns the very same :class:`Dataset` object. Arrays are
    read-only (copy before modifying). ``.gz`` files with a known md5 are checked on load.

    Raises:
        DatasetNotFoundError: the files cannot be found or downloaded.
        DatasetIntegrityError: a file is corrupt, truncated, unsafe or fails its md5 check.
    """
    name = _canonical(name)
    directory = locate_dataset(name, path, download=download).resolve()
    files = _files(name, directory)
    stamp = tuple((p.name, (st := p.stat()).st_mtime_ns, st.st_size) for p in files)
    with _LOCK:
        hit = _LOADED.get((name, directory))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    checksums: dict[str, str] = {}
    if name == "cifar10":
        train, test = _read_cifar(directory, checksums)
    else:
        train, test = _load_idx(name, directory, checksums)
    dataset = Dataset(name, train, test, _CLASSES[name], directory, checksums)
    with _LOCK:
        _LOADED[(name, directory)] = (stamp, dataset)
    return dataset
