"""Datasets: the types every dataset plugin returns, and the dispatcher that finds the plugin.

A dataset is a plugin of the entry-point group ``modelcycle.datasets`` (built-ins: ``mnist``,
``fashion-mnist``, ``cifar10``; see :mod:`modelcycle.core.hookspecs` ``DatasetSpecs``). The core
knows no dataset: :func:`load_dataset` loads the plugin named ``name`` through the registry,
asks it where the files are (``dataset_locate``) and to read them (``dataset_load``).

Loaded datasets are cached in-process, keyed by (name, location, the plugin's options) and
checked against the sizes and mtimes of the files the dataset was read from, so a second call
for unchanged files returns the very same :class:`Dataset`; its arrays are read-only because
the same objects are shared by every caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path

from modelcycle.core.config import DataConfig
from modelcycle.core.dataset_types import Dataset, Split
from modelcycle.core.errors import PluginContractError, PluginNotFoundError
from modelcycle.core.registry import PluginRegistry, installed_plugins

__all__ = [
    "Dataset",
    "Split",
    "clear_cache",
    "dataset_names",
    "load_dataset",
    "locate_dataset",
    "md5sum",
]

_CHUNK = 1 << 20


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()



# ---------------------------------------------------------------------------------- dispatch

_REGISTRY: PluginRegistry | None = None
_REGISTRY_LOCK = threading.Lock()
_LOADED: dict[tuple[str, Path, str], tuple[tuple, Dataset]] = {}
_LOCK = threading.Lock()


def dataset_names() -> list[str]:
    """Names of the installed dataset plugins (entry points; none is imported), sorted."""
    return [plugin.name for plugin in installed_plugins(("dataset",))]


def clear_cache() -> None:
    """Forget every dataset loaded in this process."""
    with _LOCK:
        _LOADED.clear()


def _squash(name: str) -> str:
    return re.sub(r"[\s_-]", "", name.lower())


def _resolve(name: str) -> str:
    """The installed dataset ``name`` designates: exactly, else ignoring case, ``-`` and ``_``
    (``Fashion_MNIST`` and ``cifar-10`` are ``fashion-mnist`` and ``cifar10``)."""
    names = dataset_names()
    if name in names:
        return name
    close = [n for n in names if _squash(n) == _squash(name)]
    if len(close) == 1:
        return close[0]
    raise PluginNotFoundError(
        f"dataset '{name}' is not installed; installed datasets: {', '.join(names) or 'none'}. "
        f"Set data.dataset to one of those, or pip install the package that provides '{name}'."
    )


def _plugin(name: str) -> PluginRegistry:
    """The process-wide registry of dataset plugins, with ``name`` loaded."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = PluginRegistry()
        _REGISTRY.load_plugin("dataset", name)
        return _REGISTRY


def _settings(name: str, path: str | os.PathLike | None, settings: DataConfig | None) -> DataConfig:
    """The ``data:`` section handed to the plugin, naming it; an explicit ``path`` wins over
    ``settings.path``."""
    if settings is None:
        return DataConfig(dataset=name, path=None if path is None else os.fspath(path))
    update: dict[str, str] = {"dataset": name} if settings.dataset != name else {}
    if path is not None and os.fspath(path) != settings.path:
        update["path"] = os.fspath(path)
    return settings.model_copy(update=update) if update else settings


def _locate(name: str, settings: DataConfig, download: bool) -> tuple[PluginRegistry, Path]:
    registry = _plugin(name)
    location = registry.call_plugin("dataset", name, "dataset_locate", settings=settings,
                                    download=download)
    if not isinstance(location, (str, os.PathLike)):
        raise PluginContractError(
            f"dataset '{name}': dataset_locate returned {type(location).__name__}, not a path")
    return registry, Path(location)


def locate_dataset(name: str, path: str | os.PathLike | None = None, *, download: bool = True,
                   settings: DataConfig | None = None) -> Path:
    """Return where dataset ``name``'s files are (a directory, or a file), as its plugin finds
    them; a plugin that downloads may fetch them into the user cache when ``download`` allows.

    ``settings`` is the ``data:`` config section (its ``options`` go to the plugin); an explicit
    ``path`` overrides ``settings.path``.

    Raises:
        PluginNotFoundError: no dataset plugin ``name`` is installed (the message lists them).
        DatasetNotFoundError: the files are nowhere the plugin looked (the message names them and
            the places looked at), or could not be downloaded.
        DatasetIntegrityError: a downloaded file or archive is corrupt or unsafe.
    """
    name = _resolve(name)
    return _locate(name, _settings(name, path, settings), download)[1]


def _stamp(dataset: Dataset) -> tuple:
    """Sizes and mtimes of the files ``dataset`` was read from (its checksums' keys)."""
    stamp = []
    source = os.fspath(dataset.source)
    for relative in sorted(dataset.checksums):
        try:
            st = os.stat(os.path.join(source, relative))  # not pathlib: datasets may hold 100k files
            stamp.append((relative, st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((relative, None, None))
    return tuple(stamp)


def load_dataset(name: str, path: str | os.PathLike | None = None, *, download: bool = True,
                 settings: DataConfig | None = None) -> Dataset:
    """Locate (see :func:`locate_dataset`), verify and load dataset ``name``; cached in-process.

    A second call for unchanged files returns the very same :class:`Dataset` object. Arrays are
    read-only (copy before modifying).

    Raises:
        PluginNotFoundError: no dataset plugin ``name`` is installed (the message lists them).
        PluginContractError: the plugin misses a hook or answers with the wrong type.
        DatasetNotFoundError: the files cannot be found or downloaded.
        DatasetIntegrityError: a file is corrupt, truncated, unsafe or fails its md5 check.
    """
    name = _resolve(name)
    settings = _settings(name, path, settings)
    registry, location = _locate(name, settings, download)
    key = (name, location.resolve(), json.dumps(settings.options, sort_keys=True, default=str))
    with _LOCK:
        hit = _LOADED.get(key)
    if hit is not None and hit[0] == _stamp(hit[1]):
        return hit[1]
    dataset = registry.call_plugin("dataset", name, "dataset_load", location=key[1],
                                   settings=settings)
    if not isinstance(dataset, Dataset):
        raise PluginContractError(
            f"dataset '{name}': dataset_load returned {type(dataset).__name__}, not a "
            "modelcycle.core.datasets.Dataset")
    with _LOCK:
        _LOADED[key] = (_stamp(dataset), dataset)
    return dataset
