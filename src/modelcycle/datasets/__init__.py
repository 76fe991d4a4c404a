"""The built-in dataset plugins (entry-point group ``modelcycle.datasets``): ``mnist``,
``fashion-mnist`` and ``cifar10``, and for a user's own data ``imagefolder`` (class folders of
PNG/JPEG files), ``npz`` (arrays in one file) and ``loader`` (the user's function returns the
arrays); one module each, declared in our ``pyproject.toml`` exactly as a third party declares
its own.

Each module implements the :class:`~modelcycle.core.hookspecs.DatasetSpecs` hooks; the readers
they share live in private modules (IDX files, CIFAR-10 batches, the look-up order and downloads).
The core reaches them only through :func:`modelcycle.core.datasets.load_dataset`. The public
helpers below are re-exported for tools and tests.
"""

from __future__ import annotations

from modelcycle.datasets._cifar import read_cifar10
from modelcycle.datasets._download import KNOWN_MD5, MIRRORS, cache_dir
from modelcycle.datasets._idx import read_idx

__all__ = ["KNOWN_MD5", "MIRRORS", "cache_dir", "read_cifar10", "read_idx"]
