"""Reading an image folder into arrays: finding the files, the stratified split, assembling the
decoded images, and the on-disk array cache that makes every load after the first cheap.

The cache (``<user cache>/imagefolder/<hash of the folder path>/``, one entry per folder,
replaced atomically) is keyed by the options and every file's relative path, size and mtime;
a hit returns the arrays and the md5s computed when the files were decoded, so a file is trusted
unchanged while its size and mtime are (as the in-process dataset cache does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelcycle.core.errors import DatasetIntegrityError, DatasetNotFoundError
from modelcycle.datasets._decode import decode_files

__all__ = ["EXTENSIONS", "FileList", "assemble", "cache_key", "cache_load", "cache_store", "scan"]

#: Image file extensions read (case-insensitive); other files in class folders are ignored.
EXTENSIONS = (".png", ".jpg", ".jpeg")

_SPLITS = ("train", "test")


@dataclass(frozen=True)
class FileList:
    """The files of a folder, sorted: ``paths`` relative to the root, their class index and split
    (0 train, 1 test), and the class names (sorted folder names)."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    splits: np.ndarray
    classes: tuple[str, ...]

    def stamp(self) -> list[tuple[str, int, int]]:
        """``(path, size, mtime_ns)`` of every file."""
        out = []
        root = str(self.root) + os.sep
        for relative in self.paths:
            st = os.stat(root + relative)  # string joins: pathlib costs more than the stat
            out.append((relative, st.st_size, st.st_mtime_ns))
        return out


def _class_files(directory: Path) -> dict[str, list[str]]:
    """``{class folder name: sorted image file names}`` of ``directory``'s sub-folders."""
    found: dict[str, list[str]] = {}
    with os.scandir(directory) as entries:
        folders = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    for name in folders:
        with os.scandir(directory / name) as entries:
            found[name] = sorted(e.name for e in entries
                                 if e.name.lower().endswith(EXTENSIONS) and not e.name.startswith(".") and e.is_file())
    return found


def _check_classes(directory: Path, files: dict[str, list[str]]) -> None:
    if not files:
        raise DatasetNotFoundError(
            f"dataset 'imagefolder': {directory} has no class folders; lay it out as <class>/*.png|jpg "
            "(or train/<class>/* and test/<class>/*)")
    empty = [name for name, names in files.items() if not names]
    if empty:
        raise DatasetIntegrityError(
            f"dataset 'imagefolder': class folder {directory / empty[0]} holds no images "
            f"({', '.join(EXTENSIONS)}){f' (nor do {len(empty) - 1} more)' if len(empty) > 1 else ''}; "
            "add images or remove the folder")


def scan(root: Path, test_fraction: float | None, seed: int) -> FileList:
    """List ``root``'s images: ``train/<class>/*`` and ``test/<class>/*``, or ``<class>/*`` split
    by ``test_fraction`` (per class, seeded: stratified).

    Raises:
        DatasetNotFoundError: no class folders, or the layout and ``test_fraction`` disagree.
        DatasetIntegrityError: an empty class folder, or train and test with different classes.
    """
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    if presplit:
        if test_fraction is not None:
            raise DatasetNotFoundError(
                f"dataset 'imagefolder': {root} already has train/ and test/; remove data.options.test_fraction "
                "(it splits a single folder of <class>/ sub-folders)")
        train, test = _class_files(root / "train"), _class_files(root / "test")
        _check_classes(root / "train", train)
        _check_classes(root / "test", test)
        if set(train) != set(test):
            raise DatasetIntegrityError(
                f"dataset 'imagefolder': train/ and test/ of {root} must have the same class folders; "
                f"only in train: {sorted(set(train) - set(test)) or 'none'}, only in test: "
                f"{sorted(set(test) - set(train)) or 'none'}")
        classes = tuple(sorted(train))
        paths, labels, splits = [], [], []
        for which, files in enumerate((train, test)):
            for label, name in enumerate(classes):
                paths += [f"{_SPLITS[which]}/{name}/{f}" for f in files[name]]
                labels += [label] * len(files[name])
                splits += [which] * len(files[name])
        return FileList(root, paths, np.array(labels, np.int64), np.array(splits, np.int8), classes)
    if test_fraction is None:
        raise DatasetNotFoundError(
            f"dataset 'imagefolder': {root} has no train/ and test/ folders; either add them "
            "(train/<class>/*, test/<class>/*) or set data.options.test_fraction (e.g. 0.2) to split "
            "its <class>/ folders")
    files = _class_files(root)
    _check_classes(root, files)
    classes = tuple(sorted(files))
    rng = np.random.default_rng(seed)
    paths, labels, splits = [], [], []
    for label, name in enumerate(classes):
        n = len(files[name])
        n_test = min(max(round(n * test_fraction), 1), n - 1) if n >= 2 else 0
        split = np.zeros(n, np.int8)
        split[rng.permutation(n)[:n_test]] = 1
        paths += [f"{name}/{f}" for f in files[name]]
        labels += [label] * n
        splits.append(split)
    return FileList(root, paths, np.array(labels, np.int64), np.concatenate(splits), classes)


def assemble(files: FileList, color: str, size: tuple[int, int] | None) -> tuple[np.ndarray, list[str]]:
    """Decode every file of ``files`` into one uint8 array ``(N, H, W)`` or ``(N, H, W, 3)``;
    also return the files' md5s.

    ``color`` ``auto`` gives RGB when any image holds colour (an RGB file whose three channels
    are equal everywhere holds none), else grayscale.

    Raises:
        DatasetIntegrityError: a file cannot be decoded (named), or, without ``size``, images of
            different sizes (two are named).
    """
    decoded = decode_files([str(files.root / p) for p in files.paths], color, size)
    if decoded.error is not None:
        index, message = decoded.error
        raise DatasetIntegrityError(
            f"dataset 'imagefolder': cannot read image {files.root / files.paths[index]} ({message}); "
            "remove or replace the file")
    arrays = decoded.arrays
    shapes: dict[tuple[int, int], int] = {}
    for index, array in enumerate(arrays):
        shapes.setdefault(array.shape[:2], index)
        if len(shapes) > 1:
            (first, i), (second, j) = shapes.items()
            raise DatasetIntegrityError(
                f"dataset 'imagefolder': images differ in size: {files.root / files.paths[i]} is "
                f"{first[0]}x{first[1]} (HxW) but {files.root / files.paths[j]} is {second[0]}x{second[1]}; "
                "set data.options.image_size (e.g. 28 or [H, W]) to resize every image")
    coloured = [i for i, a in enumerate(arrays) if a.ndim == 3]
    if color == "auto" and coloured:
        stack = np.stack([arrays[i] for i in coloured])
        if np.array_equal(stack[..., 0], stack[..., 1]) and np.array_equal(stack[..., 1], stack[..., 2]):
            for i in coloured:
                arrays[i] = arrays[i][..., 0]
            coloured = []
    if coloured:
        images = np.stack([a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays])
    else:
        images = np.stack(arrays)
    return images, decoded.md5


# ------------------------------------------------------------------------------------- cache

def _entry_dir(cache: Path, root: Path) -> Path:
    return cache / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]


def cache_key(files: FileList, settings: dict) -> str:
    """The cache key of ``files`` (paths, sizes, mtimes) read with ``settings``."""
    text = json.dumps([settings, files.stamp()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_load(cache: Path, files: FileList, key: str) -> tuple[np.ndarray, list[str]] | None:
    """The cached ``(images, md5s)`` of ``files`` under ``key``, or ``None``."""
    entry = _entry_dir(cache, files.root)
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("key") != key:
            return None
        images = np.load(entry / "images.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if len(images) != len(files.paths) or len(meta.get("md5", ())) != len(files.paths):
        return None
    return images, list(meta["md5"])


def cache_store(cache: Path, files: FileList, key: str, images: np.ndarray, md5: list[str]) -> None:
    """Replace ``files.root``'s cache entry (atomically; a failure to write is ignored)."""
    entry = _entry_dir(cache, files.root)
    staging: Path | None = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".entry-", dir=cache))
        np.save(staging / "images.npy", images, allow_pickle=False)
        (staging / "meta.json").write_text(json.dumps({
            "key": key, "root": str(files.root), "md5": md5}))
        old = None
        if entry.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=cache))
            os.replace(entry, old / "entry")
        os.replace(staging, entry)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:  # a full or read-only cache only costs the next load its speed
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
