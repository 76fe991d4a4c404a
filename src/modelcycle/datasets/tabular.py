"""Tabular records for the ``csv`` and ``parquet`` dataset plugins, and for feature-vector arrays.

A table becomes a :class:`~modelcycle.core.dataset_types.Dataset` whose ``features`` name its
columns and whose splits hold float32 ``(N, F)`` records (see
:mod:`modelcycle.core.dataset_types`). The rules, the same for every file format:

- **label**: ``options.label_column`` (required). Its distinct values (train and test) become the
  classes, sorted (numbers numerically, written as text: ``0``, ``1``, ``10``; text
  alphabetically). Floats must be integral; more than :data:`MAX_CLASSES` distinct values or
  non-integral floats are refused as "labels that are not classes".
- **features**: ``options.feature_columns`` (default: every other column, in file order).
- **categorical columns**: ``options.categorical_columns`` (default: the features that are not
  numeric; a numeric column may be declared categorical). Their categories are the sorted text
  values of the **train** split; a test value not seen in train is refused, naming the column
  and the value. The split stores the category's index.
- **missing values** are refused, naming the column and the row, unless
  ``options.drop_missing: true`` drops every row with a missing value first.
- **one file** is split into train and test by ``options.test_fraction`` (default 0.2),
  stratified by label and seeded by ``options.seed`` (default 0); a directory holds
  ``train.<ext>`` and ``test.<ext>``.

pandas (and pyarrow for parquet) are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelcycle.core.config import validate_section
from modelcycle.core.dataset_types import Dataset, Feature, Split
from modelcycle.core.datasets import md5sum
from modelcycle.core.errors import DatasetIntegrityError, DatasetNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "MAX_CLASSES",
    "TabularOptions",
    "frames_dataset",
    "load_table_dataset",
    "locate_table",
    "tabular_dataset",
    "write_breast_cancer_csv",
]

#: More distinct label values than this are not classes (a regression target, an id column).
MAX_CLASSES = 1000


class TabularOptions(BaseModel):
    """``data.options`` of the ``csv`` and ``parquet`` datasets (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_column: str = Field(description="the column holding the class of each row")
    feature_columns: tuple[str, ...] | None = Field(
        default=None, description="the model's input columns, in this order (default: every other column)")
    categorical_columns: tuple[str, ...] | None = Field(
        default=None, description="features one-hot encoded by category (default: the non-numeric ones)")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of a single file held out for test")
    seed: int = Field(default=0, description="seed of the stratified train/test split of a single file")
    drop_missing: bool = Field(default=False, description="drop rows with missing values instead of failing")


def options_of(settings: Any, dataset: str) -> TabularOptions:
    """Validate ``settings.options`` (the ``data:`` section's) as :class:`TabularOptions`.

    Raises:
        ConfigError: ``label_column`` is missing, a key is unknown or a value is invalid.
    """
    raw = getattr(settings, "options", None) or {}
    return validate_section(TabularOptions, raw, "data.options.", f"dataset '{dataset}'")  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ locate


def locate_table(dataset: str, settings: Any, suffix: str) -> Path:
    """The file or directory ``data.path`` names for a table dataset (``suffix`` ``.csv``...).

    A file is used as is; a directory must hold ``train<suffix>`` and ``test<suffix>``. The
    options are validated here too, so a bad ``data:`` section fails before anything is read.

    Raises:
        DatasetNotFoundError: ``data.path`` is missing, does not exist, or the directory lacks a split.
        ConfigError: the options are invalid.
    """
    options_of(settings, dataset)
    path = getattr(settings, "path", None)
    if not path:
        raise DatasetNotFoundError(
            f"dataset '{dataset}' needs data.path: a {suffix} file (split by options.test_fraction) or a "
            f"directory holding train{suffix} and test{suffix}")
    location = Path(path).expanduser()
    if location.is_dir():
        missing = [f"{split}{suffix}" for split in ("train", "test") if not (location / f"{split}{suffix}").is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"dataset '{dataset}': the directory {location} lacks {', '.join(missing)}; give a directory "
                f"with train{suffix} and test{suffix}, or set data.path to a single {suffix} file")
        return location
    if not location.is_file():
        raise DatasetNotFoundError(
            f"dataset '{dataset}': {location} does not exist; set data.path to your {suffix} file or to a "
            f"directory holding train{suffix} and test{suffix}")
    return location


def load_table_dataset(dataset: str, location: Path, settings: Any, suffix: str,
                       read: Callable[[Path], pd.DataFrame]) -> Dataset:
    """Read the table(s) at ``location`` (see :func:`locate_table`) with ``read`` and build the
    dataset; lineage is the md5 of every file read, keyed by its name."""
    options = options_of(settings, dataset)
    if location.is_dir():
        files = [location / f"train{suffix}", location / f"test{suffix}"]
        train, test = (read(file) for file in files)
        source, where = location, f"{location}/{{train,test}}{suffix}"
    else:
        files = [location]
        train, test = read(location), None
        source, where = location.parent, str(location)
    checksums = {file.name: md5sum(file) for file in files}
    return frames_dataset(dataset, train, test, options, source, checksums, where)


# ----------------------------------------------------------------------------- frames → arrays


def frames_dataset(name: str, train: pd.DataFrame, test: pd.DataFrame | None, options: TabularOptions,
                   source: Path, checksums: dict[str, str], where: str) -> Dataset:
    """A tabular :class:`Dataset` from pandas frames (``test`` ``None``: split ``train`` by
    ``options.test_fraction``), following the module's rules.

    Raises:
        DatasetIntegrityError: naming ``where`` and the column (and row or value) at fault.
    """
    import pandas as pd

    frames = {split: frame.rename(columns=str) for split, frame in (("train", train), ("test", test))
              if frame is not None}
    for split, frame in frames.items():
        _check_columns(frame, options, f"{where} ({split})" if test is not None else where)
    features = list(options.feature_columns or [c for c in frames["train"].columns if c != options.label_column])
    columns = [*features, options.label_column]
    if test is not None and (absent := [c for c in columns if c not in frames["test"].columns]):
        raise DatasetIntegrityError(
            f"{where} (test): column(s) {_listing(absent)} of the train file are missing; both files need the "
            "same columns")
    frames = {split: _complete(frame[columns], options.drop_missing, where, split, test is None)
              for split, frame in frames.items()}
    label_values = {split: frame[options.label_column].to_numpy() for split, frame in frames.items()}
    classes, labels = label_classes(label_values, f"{where}: label column '{options.label_column}'")
    if test is None:
        held = _stratified_split(labels["train"], options, where)
        frames = {"train": frames["train"][~held], "test": frames["train"][held]}
        labels = {"train": _readonly(labels["train"][~held]), "test": _readonly(labels["train"][held])}
    categorical = _categorical_columns(frames["train"], features, options, where)
    described: list[Feature] = []
    records: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for column in features:
        if column in categorical:
            categories = tuple(sorted(pd.unique(_as_text(frames["train"][column]))))
            described.append(Feature(column, "categorical", categories))
            for split in ("train", "test"):
                records[split].append(_codes(frames[split][column], categories, column, where, split))
        else:
            described.append(Feature(column))
            for split in ("train", "test"):
                records[split].append(_numbers(frames[split][column], column, where))
    splits = {split: Split(_readonly(np.stack(records[split], axis=1)), labels[split]) for split in ("train", "test")}
    return Dataset(name, splits["train"], splits["test"], classes, Path(source), checksums, tuple(described))


def _check_columns(frame: pd.DataFrame, options: TabularOptions, where: str) -> None:
    names = [str(c) for c in frame.columns]
    if options.label_column not in names:
        raise DatasetIntegrityError(
            f"{where}: no label column '{options.label_column}'; the columns are {_listing(names)}. "
            "Set data.options.label_column to the column holding the classes")
    if options.feature_columns is not None:
        if not options.feature_columns:
            raise DatasetIntegrityError(f"{where}: data.options.feature_columns is empty; name at least one column")
        unknown = [c for c in options.feature_columns if c not in names]
        if unknown:
            raise DatasetIntegrityError(
                f"{where}: feature column(s) {_listing(unknown)} not found; the columns are {_listing(names)}")
        if options.label_column in options.feature_columns:
            raise DatasetIntegrityError(
                f"{where}: the label column '{options.label_column}' is also listed in feature_columns; "
                "remove it from data.options.feature_columns")
    elif len(names) < 2:
        raise DatasetIntegrityError(f"{where}: only the label column '{options.label_column}'; a table needs features")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise DatasetIntegrityError(f"{where}: column name(s) {_listing(repeated)} repeat; give each column a unique name")
    if len(frame) == 0:
        raise DatasetIntegrityError(f"{where}: the table has no rows")


def _complete(frame: pd.DataFrame, drop: bool, where: str, split: str, single: bool) -> pd.DataFrame:
    """``frame`` without missing values: rows with any dropped (``drop``), else an error naming
    the first missing cell's column and row (1 = the first data row)."""
    missing = frame.isna()
    if not missing.to_numpy().any():
        return frame
    if drop:
        kept = frame[~missing.any(axis=1)]
        if len(kept) == 0:
            raise DatasetIntegrityError(f"{where}: every row has a missing value; nothing is left after drop_missing")
        return kept
    rows, cols = np.nonzero(missing.to_numpy())  # row-major: the first is the first missing cell
    row, first = int(rows[0]) + 1, 0
    label = "" if single else f" of the {split} file"
    raise DatasetIntegrityError(
        f"{where}: column '{frame.columns[cols[first]]}' has a missing value in row {row}{label} (data rows "
        "count from 1, after the header); fill it in, or set data.options.drop_missing: true to drop such rows")


def _stratified_split(labels: np.ndarray, options: TabularOptions, where: str) -> np.ndarray:
    """The rows (a mask) held out for test: ``test_fraction`` of every class (at least one row
    of a class with two or more), seeded; both parts keep the file's row order."""
    rng = np.random.default_rng(options.seed)
    held = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        count = min(max(int(round(len(rows) * options.test_fraction)), 1), len(rows) - 1)
        held[rng.permutation(rows)[:count]] = True
    if not held.any():
        raise DatasetIntegrityError(
            f"{where}: {len(labels)} row(s) are too few to hold out a test split; give more rows or a "
            "directory with train and test files")
    return held


def _categorical_columns(train: pd.DataFrame, features: list[str], options: TabularOptions, where: str) -> set[str]:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if options.categorical_columns is not None:
        unknown = [c for c in options.categorical_columns if c not in features]
        if unknown:
            raise DatasetIntegrityError(
                f"{where}: categorical column(s) {_listing(unknown)} are not features; the features are "
                f"{_listing(features)}")
        declared = set(options.categorical_columns)
        for column in features:
            if column not in declared and not _is_number_column(train[column]):
                value = next(v for v in train[column].tolist() if not _is_number(v))
                raise DatasetIntegrityError(
                    f"{where}: column '{column}' holds text ({value!r}) but is not in categorical_columns; add it "
                    "to data.options.categorical_columns (or leave that option out to encode every text column)")
        return declared
    return {c for c in features if is_bool_dtype(train[c]) or not is_numeric_dtype(train[c])}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _is_number_column(series: pd.Series) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(series) and not is_bool_dtype(series)


def _as_text(series: pd.Series) -> pd.Series:
    """A column's values as text; integral floats lose their ``.0`` (``3.0`` → ``"3"``)."""
    if _is_number_column(series):
        values = series.to_numpy()
        if values.dtype.kind == "f" and np.all(values == np.rint(values)):
            return series.astype(np.int64).astype(str)
    return series.astype(object).astype(str)


def _codes(series: pd.Series, categories: tuple[str, ...], column: str, where: str, split: str) -> np.ndarray:
    import pandas as pd

    text = _as_text(series)
    codes = pd.Categorical(text, categories=list(categories)).codes
    if (codes < 0).any():
        value = text.to_numpy()[int(np.argmax(codes < 0))]
        raise DatasetIntegrityError(
            f"{where}: column '{column}' has the value {value!r} in the {split} split, which the train split "
            f"never has (its categories: {_listing(list(categories))}); categories are learned from the train "
            "data, so add such rows to train or remove them from test")
    return codes.astype(np.float32)


def _numbers(series: pd.Series, column: str, where: str) -> np.ndarray:
    try:
        values = series.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in series.tolist() if not _is_number(v)), None)
        raise DatasetIntegrityError(
            f"{where}: numerical column '{column}' holds {bad!r}; fix the value or declare the column in "
            "data.options.categorical_columns") from None
    if not np.all(np.isfinite(values)):
        raise DatasetIntegrityError(f"{where}: numerical column '{column}' holds an infinite value; give finite numbers")
    return values.astype(np.float32)


def label_classes(values: dict[str, np.ndarray], where: str) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Classes (sorted distinct values, as text) and int64 label indices of every split's
    ``values``. Numbers sort numerically and must be integral.

    Raises:
        DatasetIntegrityError: labels that are not classes (non-integral floats, more than
            :data:`MAX_CLASSES` distinct values).
    """
    arrays = {split: np.asarray(v).reshape(-1) for split, v in values.items()}
    numeric = all(a.dtype.kind in "iuf" for a in arrays.values())
    if numeric:
        joined = np.concatenate([a.astype(np.float64) for a in arrays.values()])
        integral = np.isfinite(joined) & (joined == np.rint(joined))
        if not integral.all():
            raise DatasetIntegrityError(
                f"{where} holds {float(joined[~integral][0])!r}: labels that are not classes (classes are integers or "
                "text); a continuous target needs a regression model, which modelcycle does not train")
        distinct = np.unique(joined.astype(np.int64))
        keys = {split: a.astype(np.int64) for split, a in arrays.items()}
        classes = tuple(str(v) for v in distinct.tolist())
    else:
        keys = {split: np.asarray([str(v) for v in a.tolist()], dtype=object) for split, a in arrays.items()}
        distinct = np.array(sorted({v for a in keys.values() for v in a.tolist()}), dtype=object)
        classes = tuple(distinct.tolist())
    if len(classes) > MAX_CLASSES:
        raise DatasetIntegrityError(
            f"{where} has {len(classes)} distinct values: labels that are not classes (at most {MAX_CLASSES}); "
            "check that the label column holds the class of each row, not an id or a measurement")
    if len(classes) < 2:
        raise DatasetIntegrityError(f"{where} has a single class {list(classes)}; a classifier needs at least two")
    labels = {split: _readonly(np.searchsorted(distinct, key).astype(np.int64)) for split, key in keys.items()}
    return classes, labels


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


def _listing(names: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(repr(str(n)) for n in list(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# ------------------------------------------------------------------------------------- arrays


def tabular_dataset(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, source: str | os.PathLike,
                    checksums: dict[str, str], feature_names: Sequence[str] | None = None,
                    classes: Sequence[str] | None = None) -> Dataset:
    """A tabular :class:`Dataset` from feature-vector arrays (an ``npz`` with 2-D ``x_train``, a
    loader function): every feature numerical, named ``feature_names`` or ``f0 .. f{F-1}``.

    Labels: with ``classes`` given, integer indices into them or their names; otherwise the
    distinct values become the sorted classes (as for a table's label column).

    Raises:
        DatasetIntegrityError: a non-2-D or non-numeric ``x``, non-finite values, train and test
            widths or lengths that differ, wrong feature names, or labels that are not classes.
    """
    x = {"train": _features(x_train, "x_train"), "test": _features(x_test, "x_test")}
    if x["train"].shape[1] != x["test"].shape[1]:
        raise DatasetIntegrityError(
            f"x_train has {x['train'].shape[1]} features but x_test {x['test'].shape[1]}; both need the same columns")
    width = x["train"].shape[1]
    names = tuple(str(n) for n in feature_names) if feature_names is not None else tuple(f"f{i}" for i in range(width))
    if len(names) != width or len(set(names)) != width:
        raise DatasetIntegrityError(f"feature_names must be {width} distinct names, got {list(names)[:20]}")
    y = {"train": np.asarray(y_train).reshape(-1), "test": np.asarray(y_test).reshape(-1)}
    for split in ("train", "test"):
        if len(y[split]) != len(x[split]):
            raise DatasetIntegrityError(
                f"x_{split} holds {len(x[split])} records but y_{split} {len(y[split])} labels; they must have "
                "the same length")
    if classes is None:
        found, labels = label_classes(y, "the labels")
    else:
        found, labels = tuple(str(c) for c in classes), {s: _indices(y[s], classes, f"y_{s}") for s in y}
    return Dataset(name, Split(x["train"], labels["train"]), Split(x["test"], labels["test"]), found,
                   Path(source), dict(checksums), tuple(Feature(n) for n in names))


def _features(x: Any, where: str) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 2 or array.dtype.kind not in "iufb":
        raise DatasetIntegrityError(
            f"{where}: feature vectors must be a numeric (N, F) array, got {array.dtype} of shape {list(array.shape)}")
    if len(array) == 0:
        raise DatasetIntegrityError(f"{where} holds no records")
    values = array.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise DatasetIntegrityError(f"{where} holds NaN or infinite values; give finite numbers")
    return _readonly(values)


def _indices(y: np.ndarray, classes: Sequence[str], where: str) -> np.ndarray:
    names = [str(c) for c in classes]
    if y.dtype.kind in "USO":
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({str(v) for v in y.tolist()} - set(index))
        if unknown:
            raise DatasetIntegrityError(f"{where}: labels {unknown[:5]} are not among the classes {names[:20]}")
        return _readonly(np.array([index[str(v)] for v in y.tolist()], dtype=np.int64))
    values = y.astype(np.float64)
    if not np.all((values == np.rint(values)) & (values >= 0) & (values < len(names))):
        raise DatasetIntegrityError(f"{where}: labels must be class indices 0..{len(names) - 1}")
    return _readonly(values.astype(np.int64))


# ------------------------------------------------------------------------------------ example


def write_breast_cancer_csv(path: str | os.PathLike) -> Path:
    """Write scikit-learn's breast cancer data (569 rows, offline) as a CSV at ``path``: the 30
    numerical features, a categorical ``size_band`` column (``low``/``mid``/``high`` terciles of
    ``mean area``) and the ``diagnosis`` label (``malignant``/``benign``). Returns the path."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame: pd.DataFrame = bunch.frame.drop(columns="target")
    frame["size_band"] = pd.qcut(frame["mean area"], 3, labels=["low", "mid", "high"]).astype(str)
    frame["diagnosis"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(target, index=False, float_format="%.6g")
    return target
