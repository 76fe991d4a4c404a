"""The look-up order shared by the built-in file datasets, and their downloads.

A dataset's directory is found (:func:`locate`) in this order:

1. an explicit ``path`` (never falls through: missing files there are an error);
2. ``$MODELCYCLE_DATA_DIR/<name>/`` or ``$MODELCYCLE_DATA_DIR`` itself;
3. the user cache: ``$MODELCYCLE_CACHE_DIR/<name>`` if set, else
   ``$XDG_CACHE_HOME/modelcycle/datasets/<name>``, else ``~/.cache/modelcycle/datasets/<name>``;
4. a download into the user cache, mirror by mirror (``$MODELCYCLE_DATASET_MIRROR`` first, where
   ``{name}`` stands for the dataset's name), each file verified against :data:`KNOWN_MD5` before
   an atomic rename;
5. otherwise :class:`~modelcycle.core.errors.DatasetNotFoundError` naming the files needed and
   the places looked at.

What differs per dataset (its files, a nested directory, how a download is unpacked) is a
:class:`Layout`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ConfigError, DatasetIntegrityError, DatasetNotFoundError

__all__ = ["FIX", "KNOWN_MD5", "MIRRORS", "Layout", "cache_dir", "fetch", "locate", "mirrors", "settings_path"]

log = logging.getLogger(__name__)

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
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
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

#: How to repair a bad file; ends every integrity error.
FIX = "delete the file and load again to re-download it (or replace it with a good copy)"

_CHUNK = 1 << 20
_TIMEOUT = 30.0


class Layout:
    """The files of one dataset on disk; subclasses say which files and how a download unpacks.

    Attributes:
        name: the dataset's name (its cache and ``MODELCYCLE_DATA_DIR`` sub-directory).
    """

    name: str

    def missing(self, directory: Path) -> list[str]:
        """Names of the files this dataset needs that ``directory`` lacks."""
        raise NotImplementedError

    def needed(self) -> str:
        """The files needed, as the not-found message lists them."""
        raise NotImplementedError

    def candidates(self, directory: Path) -> list[Path]:
        """Directories to try for a base ``directory`` (itself, plus any nested layout)."""
        return [directory]

    def downloads(self, cache: Path) -> list[str]:
        """File names a download must fetch into ``cache``."""
        return self.missing(cache)

    def unpack(self, cache: Path) -> Path:
        """Turn fetched files in ``cache`` into the dataset's directory and return it."""
        return cache


def cache_dir(name: str) -> Path:
    """The user cache directory of dataset ``name`` (see the module docstring)."""
    if root := os.environ.get("MODELCYCLE_CACHE_DIR"):
        return Path(root).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "modelcycle" / "datasets" / name


def mirrors(name: str) -> list[str]:
    """Base URLs to download ``name`` from, ``$MODELCYCLE_DATASET_MIRROR`` first."""
    override = os.environ.get("MODELCYCLE_DATASET_MIRROR", "").strip()
    bases = ([override.replace("{name}", name)] if override else []) + list(MIRRORS.get(name, ()))
    return [b if b.endswith("/") else b + "/" for b in bases]


def fetch(url: str, target: Path, expected: str | None) -> None:
    """Download ``url`` to a temp file beside ``target``, check its md5, then rename atomically.

    Raises:
        DatasetIntegrityError: the md5 is not ``expected`` (nothing is left behind).
        OSError, http.client.HTTPException: the transfer failed.
    """
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


def _download(layout: Layout, cache: Path, failures: list[str]) -> Path | None:
    """Fetch what ``layout`` lacks into ``cache``; ``None`` (failures recorded) if a file failed."""
    for file in layout.downloads(cache):
        for base in mirrors(layout.name):
            url = base + file
            try:
                log.info("downloading %s", url)
                fetch(url, cache / file, KNOWN_MD5.get(layout.name, {}).get(file))
                break
            except (OSError, ValueError, http.client.HTTPException, DatasetIntegrityError) as exc:
                failures.append(f"{url}: {exc}")
        else:
            return None
    return layout.unpack(cache)


def locate(layout: Layout, path: str | os.PathLike | None, download: bool) -> Path:
    """Return the directory holding ``layout``'s files, downloading them if ``download`` allows.

    Raises:
        DatasetNotFoundError: the explicit ``path`` lacks files, or the files are nowhere and could
            not be downloaded; the message names the files needed and every place looked at.
        DatasetIntegrityError: a downloaded archive holds unsafe or missing members.
    """
    name = layout.name
    if path is not None:
        explicit = Path(path).expanduser()
        for candidate in layout.candidates(explicit):
            if not layout.missing(candidate):
                return candidate
        raise DatasetNotFoundError(
            f"dataset '{name}': the given path {explicit} lacks {', '.join(layout.missing(explicit))}")
    looked: list[Path] = []
    if data_dir := os.environ.get("MODELCYCLE_DATA_DIR"):
        base = Path(data_dir).expanduser()
        looked += layout.candidates(base / name) + layout.candidates(base)
    cache = cache_dir(name)
    looked += layout.candidates(cache)
    for candidate in looked:
        if not layout.missing(candidate):
            return candidate
    failures: list[str] = []
    if download and (found := _download(layout, cache, failures)) is not None:
        return found
    how = "download disabled (download=False)" if not download else \
        "download failed: " + "; ".join(failures or ["no mirror configured"])
    raise DatasetNotFoundError(
        f"dataset '{name}' not found: need {layout.needed()}; looked in {', '.join(map(str, looked))}; "
        f"{how}. Put the files in {cache} or set MODELCYCLE_DATA_DIR to a directory holding {name}/")


def settings_path(name: str, settings: Any) -> str | None:
    """The explicit ``path`` of the ``data:`` settings of a built-in dataset, which takes no
    ``options``.

    Raises:
        ConfigError: ``settings.options`` is not empty.
    """
    options = getattr(settings, "options", None) or {}
    if options:
        raise ConfigError(
            f"data.options: dataset '{name}' takes no options, got {', '.join(sorted(options))}; "
            "remove them from the data: section")
    return getattr(settings, "path", None)
