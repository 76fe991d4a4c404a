"""The ``imagefolder`` dataset plugin: a user's images in class folders.

``data: {dataset: imagefolder, path: DIR, options: {...}}`` where ``DIR`` holds
``train/<class>/*.png|jpg|jpeg`` and ``test/<class>/*``, or ``<class>/*`` with
``options.test_fraction`` (a seeded split, stratified per class). Class names are the folder
names, sorted (label = index); train and test need the same classes.

Options (unknown keys are refused):

- ``color``: ``auto`` (default: RGB when any image holds colour, else grayscale),
  ``grayscale`` or ``rgb``; images load as uint8 ``(N, H, W)`` or ``(N, H, W, 3)``.
- ``image_size``: ``28`` or ``[H, W]``: every image is resized (Pillow, bilinear). Without it, all
  images must have one size (else an error names two files that differ).
- ``test_fraction`` (0 < f < 1) and ``seed`` (default 0): the split of a single folder.
- ``cache`` (default true): keep the decoded arrays in the user cache
  (``$MODELCYCLE_CACHE_DIR/imagefolder`` …), so only the first load decodes the files; an entry
  is reused while every file's path, size and mtime are unchanged.

Lineage: the md5 of every image file, keyed ``train/<class>/<file>`` (or ``<class>/<file>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from modelcycle.core.datasets import Dataset, Split
from modelcycle.core.errors import DatasetNotFoundError
from modelcycle.core.markers import hookimpl
from modelcycle.datasets._arrays import Options, options, readonly
from modelcycle.datasets._download import cache_dir
from modelcycle.datasets._folder import assemble, cache_key, cache_load, cache_store, scan

NAME = "imagefolder"


class ImageFolderOptions(Options):
    """``data.options`` of the ``imagefolder`` dataset (see the module docstring)."""

    color: Literal["auto", "grayscale", "rgb"] = "auto"
    image_size: int | tuple[int, int] | None = Field(default=None, description="28 or [H, W]")
    test_fraction: float | None = Field(default=None, gt=0, lt=1)
    seed: int = 0
    cache: bool = True

    @field_validator("image_size")
    @classmethod
    def _size(cls, value: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        sides = (value,) if isinstance(value, int) else (value or ())
        if any(side < 1 or side > 8192 for side in sides):
            raise ValueError(f"image_size sides must be 1..8192 pixels, got {value}")
        return value

    @property
    def size(self) -> tuple[int, int] | None:
        """``(H, W)`` to resize to, or ``None``."""
        if self.image_size is None:
            return None
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)


@hookimpl
def dataset_locate(settings: Any, download: bool) -> Path:
    options(ImageFolderOptions, settings, NAME)  # a misspelt option fails before anything is read
    path = getattr(settings, "path", None)
    if path is None:
        raise DatasetNotFoundError(
            "dataset 'imagefolder' needs data.path: the folder holding train/<class>/* and test/<class>/* "
            "(or <class>/* with data.options.test_fraction)")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetNotFoundError(f"dataset 'imagefolder': {folder} is not a directory; set data.path to your image folder")
    return folder


@hookimpl
def dataset_load(location: Path, settings: Any) -> Dataset:
    opts = options(ImageFolderOptions, settings, NAME)
    files = scan(location, opts.test_fraction, opts.seed)
    read = {"color": opts.color, "size": opts.size}
    key = cache_key(files, read) if opts.cache else ""
    cached = cache_load(cache_dir(NAME), files, key) if opts.cache else None
    if cached is None:
        images, md5 = assemble(files, opts.color, opts.size)
        if opts.cache:
            cache_store(cache_dir(NAME), files, key, images, md5)
    else:
        images, md5 = cached
    train, test = files.splits == 0, files.splits == 1
    return Dataset(
        NAME,
        Split(readonly(images[train]), readonly(files.labels[train])),
        Split(readonly(images[test]), readonly(files.labels[test])),
        files.classes,
        location,
        dict(zip(files.paths, md5)),
    )
