"""Checks shared by the dataset plugins that take a user's arrays (``npz``, ``loader``) or
build them (``imagefolder``): plugin options, image arrays, labels and class names.

Conversions (documented for users):

- images: uint8 is taken as is; a float array whose values lie in 0..1 is multiplied by 255,
  one in 0..255 is taken as intensities; either is rounded to uint8. Integers in 0..255 are cast.
  Anything else (NaN, negative, above 255) is refused.
- labels: integers in ``0..len(classes) - 1``; strings are mapped to the sorted class names (or
  to ``classes`` when given); integral floats (``3.0``) are accepted. Anything else is refused.
- feature vectors: a 2-D ``x_train`` (and ``x_test``) of shape ``(N, F)`` is tabular data: every
  feature numerical, named by an optional ``feature_names`` array (``F`` distinct names), else
  ``f0 .. f{F-1}`` (see :func:`modelcycle.datasets.tabular.tabular_dataset`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from modelcycle.core.config import validate_section
from pathlib import Path

from modelcycle.core.dataset_types import Dataset, Split
from modelcycle.core.errors import DatasetIntegrityError
from modelcycle.datasets.tabular import tabular_dataset

__all__ = ["KEYS", "Options", "as_images", "as_labels", "class_names", "from_arrays", "infer_classes", "options",
           "readonly", "split"]

#: The arrays a user gives, in order.
KEYS = ("x_train", "y_train", "x_test", "y_test")

O = TypeVar("O", bound=BaseModel)


class Options(BaseModel):
    """Base of a dataset plugin's ``data.options``: unknown keys are refused, listing the allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def options(model: type[O], settings: Any, dataset: str) -> O:
    """Validate ``settings.options`` with ``model``.

    Raises:
        ConfigError: a key is unknown (the allowed keys are listed) or a value is invalid.
    """
    raw = getattr(settings, "options", None) or {}
    return validate_section(model, raw, "data.options", f"dataset '{dataset}'")  # type: ignore[return-value]


def readonly(array: np.ndarray) -> np.ndarray:
    """Mark ``array`` read-only (loaded datasets are shared by every caller) and return it."""
    array.flags.writeable = False
    return array


def as_images(x: Any, where: str) -> np.ndarray:
    """``x`` as read-only uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` (see the module docstring).

    Raises:
        DatasetIntegrityError: naming ``where``: 2-D feature vectors, a wrong rank, a non-numeric
            dtype, or values outside 0..255.
    """
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise DatasetIntegrityError(f"{where}: not an array ({exc})") from None
    if array.ndim == 2:
        raise DatasetIntegrityError(
            f"{where}: shape {list(array.shape)} is 2-D feature vectors while x_train holds images; give both "
            "splits as images (N, H, W) or (N, H, W, C), or both as (N, F) feature vectors")
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 2, 3, 4)):
        raise DatasetIntegrityError(
            f"{where}: shape {list(array.shape)} is not images; give (N, H, W) grayscale or "
            "(N, H, W, C) channels-last with C in 1..4")
    if array.dtype == np.uint8:
        return readonly(np.ascontiguousarray(array))
    if array.dtype.kind not in "iuf":
        raise DatasetIntegrityError(f"{where}: dtype {array.dtype} is not numeric; give uint8 or float pixels")
    if array.size == 0:
        return readonly(array.astype(np.uint8))
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise DatasetIntegrityError(
            f"{where}: pixel values {low:g}..{high:g} are outside 0..255 (or not finite); give uint8, "
            "floats in 0..1, or floats in 0..255")
    if array.dtype.kind == "f" and high <= 1.0:
        array = array * 255.0
    return readonly(np.rint(array).astype(np.uint8))


def class_names(given: Any, where: str) -> tuple[str, ...] | None:
    """The class names ``given`` (a sequence or array of names), or ``None`` when absent.

    Raises:
        DatasetIntegrityError: names repeat or are empty.
    """
    if given is None:
        return None
    names = tuple(str(c) for c in np.asarray(given).reshape(-1).tolist())
    if not names or len(set(names)) != len(names) or any(not n for n in names):
        raise DatasetIntegrityError(f"{where}: classes must be distinct non-empty names, got {list(names)[:20]}")
    return names


def as_labels(y: Any, classes: tuple[str, ...], where: str) -> np.ndarray:
    """``y`` as read-only int64 labels in ``0..len(classes) - 1`` (strings mapped by name).

    Raises:
        DatasetIntegrityError: naming ``where`` and the first offending label.
    """
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DatasetIntegrityError(f"{where}: labels must be 1-D (N,), got shape {list(array.shape)}")
    if array.dtype.kind in "USO":
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in array.tolist()} - set(index))
        if unknown:
            raise DatasetIntegrityError(
                f"{where}: labels {unknown[:5]} are not classes; classes are {list(classes)[:20]}")
        return readonly(np.fromiter((index[str(v)] for v in array.tolist()), np.int64, len(array)))
    if array.dtype.kind == "f":
        if array.size and not np.all(np.isfinite(array) & (array == np.rint(array))):
            bad = array[~(np.isfinite(array) & (array == np.rint(array)))][0]
            raise DatasetIntegrityError(f"{where}: label {bad.item()!r} is not an integer; labels are class indices")
    elif array.dtype.kind not in "iub":
        raise DatasetIntegrityError(f"{where}: labels of dtype {array.dtype} are not class indices")
    labels = array.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        bad = labels[(labels < 0) | (labels >= len(classes))][0]
        raise DatasetIntegrityError(
            f"{where}: label {bad} is not a class: labels must lie in 0..{len(classes) - 1} "
            f"({len(classes)} classes{'' if len(classes) > 10 else ': ' + ', '.join(classes)})")
    return readonly(labels)


def infer_classes(labels: list[Any], given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The classes: ``given``, else the sorted distinct string labels, else ``0..max label``."""
    if given is not None:
        return given
    arrays = [np.asarray(y) for y in labels]
    if any(a.dtype.kind in "USO" for a in arrays):
        return tuple(sorted({str(v) for a in arrays for v in a.reshape(-1).tolist()}))
    highest = max((int(np.max(a)) for a in arrays if a.size and a.dtype.kind in "iuf"
                   and np.all(np.isfinite(a))), default=0)
    return tuple(str(i) for i in range(max(highest, 0) + 1))


def split(arrays: Mapping[str, Any], which: str, classes: tuple[str, ...], where: str) -> Split:
    """The ``which`` split (``train``/``test``) of ``arrays`` (keys ``x_<which>``, ``y_<which>``).

    Raises:
        DatasetIntegrityError: the images and labels are bad or their lengths differ.
    """
    images = as_images(arrays[f"x_{which}"], f"{where} x_{which}")
    labels = as_labels(arrays[f"y_{which}"], classes, f"{where} y_{which}")
    if len(images) != len(labels):
        raise DatasetIntegrityError(
            f"{where}: x_{which} holds {len(images)} images but y_{which} {len(labels)} labels; "
            "they must have the same length")
    if len(images) == 0:
        raise DatasetIntegrityError(f"{where}: x_{which} holds no images")
    return Split(images, labels)


def from_arrays(name: str, arrays: Mapping[str, Any], source: Path, checksums: dict[str, str],
                where: str) -> Dataset:
    """A :class:`Dataset` from a user's ``x_train, y_train, x_test, y_test`` (+ optional
    ``classes``, and ``feature_names`` for feature vectors), every array checked and converted
    (see the module docstring): images, or a tabular dataset when ``x_train`` is 2-D.

    Raises:
        DatasetIntegrityError: naming ``where``: a key is missing, an array is bad, lengths differ,
            or train and test images differ in shape.
    """
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise DatasetIntegrityError(
            f"{where}: missing {', '.join(missing)}; give x_train, y_train, x_test, y_test "
            f"(and optionally classes), got {', '.join(sorted(arrays)) or 'nothing'}")
    given = class_names(arrays.get("classes"), f"{where} classes")
    if np.ndim(arrays["x_train"]) == 2:
        return _feature_vectors(name, arrays, source, checksums, where, given)
    if arrays.get("feature_names") is not None:
        raise DatasetIntegrityError(
            f"{where}: feature_names is given but x_train holds images; feature_names names the columns of "
            "2-D (N, F) feature vectors, so remove it or give feature vectors")
    classes = infer_classes([arrays["y_train"], arrays["y_test"]], given)
    train = split(arrays, "train", classes, where)
    test = split(arrays, "test", classes, where)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DatasetIntegrityError(
            f"{where}: train images are {list(train.images.shape[1:])} but test images "
            f"{list(test.images.shape[1:])}; both splits need the same image shape")
    return Dataset(name, train, test, classes, source, checksums)


def _feature_vectors(name: str, arrays: Mapping[str, Any], source: Path, checksums: dict[str, str], where: str,
                     classes: tuple[str, ...] | None) -> Dataset:
    """A tabular :class:`Dataset` from 2-D ``x_train``/``x_test`` (errors name ``where``)."""
    names = arrays.get("feature_names")
    if names is not None:
        names = np.asarray(names)
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DatasetIntegrityError(
                f"{where}: feature_names must be a 1-D array of names (strings), got {names.dtype} of shape "
                f"{list(names.shape)}")
        names = [str(n) for n in names.tolist()]
    try:
        return tabular_dataset(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                               source=source, checksums=checksums, feature_names=names, classes=classes)
    except DatasetIntegrityError as exc:
        raise DatasetIntegrityError(f"{where}: {exc}") from None
