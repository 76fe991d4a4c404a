"""The ``csv`` and ``parquet`` dataset plugins and the tabular array helper: real files written
into ``tmp_path`` (scikit-learn's breast cancer data with a categorical column), loaded through
the dataset dispatcher as training loads them, and every bad input refused with a message that
names what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelcycle.core.config import DataConfig
from modelcycle.core.datasets import clear_cache, load_dataset, md5sum
from modelcycle.core.errors import ConfigError, DatasetIntegrityError, DatasetNotFoundError
from modelcycle.datasets.tabular import MAX_CLASSES, tabular_dataset, write_breast_cancer_csv

LABEL = {"label_column": "diagnosis"}


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


@pytest.fixture
def bc_csv(tmp_path: Path) -> Path:
    return write_breast_cancer_csv(tmp_path / "bc.csv")


def load(kind: str, path: Path | str | None, **options: Any) -> Any:
    settings = DataConfig(dataset=kind, path=None if path is None else str(path), options=options)
    return load_dataset(kind, settings=settings)


def small_frame(rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "x": rng.normal(size=rows),
        "colour": np.where(np.arange(rows) % 3 == 0, "red", "blue"),
        "grade": np.arange(rows) % 4,
        "label": np.where(np.arange(rows) % 2 == 0, 10, 2),
    })


# --------------------------------------------------------------------------------- loading


def test_the_breast_cancer_csv_has_30_numerical_features_a_text_column_and_text_labels(bc_csv: Path) -> None:
    frame = pd.read_csv(bc_csv)
    assert len(frame) == 569 and frame.shape[1] == 32
    assert sorted(frame["size_band"].unique()) == ["high", "low", "mid"]
    assert sorted(frame["diagnosis"].unique()) == ["benign", "malignant"]


def test_a_single_csv_is_split_stratified_with_categories_learned_from_train(bc_csv: Path) -> None:
    dataset = load("csv", bc_csv, **LABEL)
    assert dataset.name == "csv" and dataset.tabular
    assert dataset.classes == ("benign", "malignant")
    assert (len(dataset.train), len(dataset.test)) == (456, 113)  # 20 % of 357 benign + 20 % of 212 malignant
    assert dataset.train.images.dtype == np.float32 and dataset.train.images.shape == (len(dataset.train), 31)
    assert not dataset.train.images.flags.writeable and not dataset.train.labels.flags.writeable
    names = [f.name for f in dataset.features]
    assert names[0] == "mean radius" and names[-1] == "size_band" and "diagnosis" not in names
    band = dataset.features[-1]
    assert band.kind == "categorical" and band.categories == ("high", "low", "mid")
    assert all(f.kind == "numerical" for f in dataset.features[:-1])
    assert set(np.unique(dataset.train.images[:, -1])) == {0.0, 1.0, 2.0}
    # stratified: both splits keep the 37/63 class balance within two points
    shares = [float(np.mean(split.labels)) for split in (dataset.train, dataset.test)]
    assert abs(shares[0] - shares[1]) < 0.02
    assert dataset.checksums == {"bc.csv": md5sum(bc_csv)} and dataset.source == bc_csv.parent
    # the raw values are the file's
    frame = pd.read_csv(bc_csv)
    assert np.isclose(dataset.train.images[:, 0].sum() + dataset.test.images[:, 0].sum(), frame["mean radius"].sum(),
                      rtol=1e-5)


def test_the_split_is_seeded(bc_csv: Path) -> None:
    first = load("csv", bc_csv, **LABEL)
    clear_cache()
    again = load("csv", bc_csv, **LABEL)
    clear_cache()
    other = load("csv", bc_csv, seed=7, test_fraction=0.3, **LABEL)
    assert np.array_equal(first.test.images, again.test.images)
    assert not np.array_equal(first.test.images[:50], other.test.images[:50])
    assert abs(len(other.test) - 0.3 * 569) <= 2


def test_a_directory_with_train_and_test_files_and_chosen_columns(tmp_path: Path) -> None:
    frame = small_frame()
    frame[:30].to_csv(tmp_path / "train.csv", index=False)
    frame[30:].to_csv(tmp_path / "test.csv", index=False)
    dataset = load("csv", tmp_path, label_column="label", feature_columns=["grade", "x"],
                   categorical_columns=["grade"])
    assert [(f.name, f.kind) for f in dataset.features] == [("grade", "categorical"), ("x", "numerical")]
    assert dataset.features[0].categories == ("0", "1", "2", "3")  # a numeric column as categories
    assert dataset.classes == ("2", "10")  # integer labels sort as numbers, written as text
    assert np.array_equal(dataset.train.labels, (frame["label"][:30] == 10).astype(int))
    assert (len(dataset.train), len(dataset.test)) == (30, 10)
    assert set(dataset.checksums) == {"train.csv", "test.csv"}
    assert np.array_equal(dataset.test.images[:, 1], frame["x"][30:].to_numpy(np.float32))


def test_parquet_files_load_like_csv(tmp_path: Path, bc_csv: Path) -> None:
    pd.read_csv(bc_csv).to_parquet(tmp_path / "bc.parquet")
    from_parquet = load("parquet", tmp_path / "bc.parquet", **LABEL)
    from_csv = load("csv", bc_csv, **LABEL)
    assert from_parquet.features == from_csv.features and from_parquet.classes == from_csv.classes
    assert np.allclose(from_parquet.train.images, from_csv.train.images, rtol=1e-5)
    assert from_parquet.checksums == {"bc.parquet": md5sum(tmp_path / "bc.parquet")}
    split = tmp_path / "split"
    split.mkdir()
    frame = small_frame()
    frame["colour"] = frame["colour"].astype("category")  # dictionary-encoded in the file
    frame[:30].to_parquet(split / "train.parquet")
    frame[30:].to_parquet(split / "test.parquet")
    dataset = load("parquet", split, label_column="label")
    assert dataset.features[1].kind == "categorical" and dataset.features[1].categories == ("blue", "red")


def test_drop_missing_drops_rows_with_a_missing_value(tmp_path: Path) -> None:
    frame = small_frame()
    frame.loc[[4, 9], "x"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    dataset = load("csv", tmp_path / "t.csv", label_column="label", drop_missing=True)
    assert len(dataset.train) + len(dataset.test) == 38


def test_preprocessing_standardises_numbers_and_one_hot_encodes_categories(bc_csv: Path) -> None:
    from modelcycle.core.training import dataset_input_schema, dataset_input_shape, dataset_preprocessing

    dataset = load("csv", bc_csv, **LABEL)
    prep = dataset_preprocessing(dataset)
    assert prep.scale == 1.0 and prep.categories == (0,) * 30 + (3,) and prep.input_width == 33
    assert dataset_input_shape(dataset) == (33,)
    encoded = prep.apply(dataset.train.images)
    assert encoded.shape == (len(dataset.train), 33) and encoded.dtype == np.float32
    assert np.allclose(encoded[:, :30].mean(axis=0), 0, atol=1e-4)
    assert np.allclose(encoded[:, :30].std(axis=0), 1, atol=1e-3)
    one_hot = encoded[:, 30:]
    assert np.array_equal(one_hot.sum(axis=1), np.ones(len(one_hot)))
    assert np.array_equal(one_hot.argmax(axis=1), dataset.train.images[:, 30].astype(int))
    schema = dataset_input_schema(dataset, (33,))
    assert schema.kind == "tabular" and schema.shape == (31,) and schema.dtype == "float32"
    assert schema.field_names == [f.name for f in dataset.features]
    assert schema.fields[-1].categories == ("high", "low", "mid")
    assert schema.value_range == (float(dataset.train.images.min()), float(dataset.train.images.max()))


# ---------------------------------------------------------------------------------- errors


def test_locating_needs_an_existing_path_and_both_split_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"needs data.path: a \.csv file"):
        load("csv", None, **LABEL)
    with pytest.raises(DatasetNotFoundError, match="nope.csv does not exist"):
        load("csv", tmp_path / "nope.csv", **LABEL)
    small_frame().to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DatasetNotFoundError, match=r"lacks test\.csv"):
        load("csv", tmp_path, label_column="label")


def test_options_are_validated(bc_csv: Path) -> None:
    with pytest.raises(ConfigError, match="label_column"):
        load("csv", bc_csv)
    with pytest.raises(ConfigError, match="colums"):
        load("csv", bc_csv, colums=["a"], **LABEL)
    with pytest.raises(ConfigError, match="test_fraction"):
        load("csv", bc_csv, test_fraction=1.5, **LABEL)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"label_column": "target"}, r"no label column 'target'; the columns are 'x', 'colour'"),
        ({"label_column": "label", "feature_columns": ["x", "size"]}, r"feature column\(s\) 'size' not found"),
        ({"label_column": "label", "feature_columns": ["x", "label"]}, "also listed in feature_columns"),
        ({"label_column": "label", "categorical_columns": ["x", "shade"]}, r"'shade' are not features"),
        ({"label_column": "label", "categorical_columns": ["grade"]},
         r"column 'colour' holds text \('red'\) but is not in categorical_columns"),
    ],
)
def test_bad_columns_are_named(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    small_frame().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetIntegrityError, match=message):
        load("csv", tmp_path / "t.csv", **options)


def test_a_test_file_without_a_train_column_is_refused(tmp_path: Path) -> None:
    frame = small_frame()
    frame[:30].to_csv(tmp_path / "train.csv", index=False)
    frame[30:].drop(columns="grade").to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DatasetIntegrityError, match=r"\(test\): column\(s\) 'grade' of the train file are missing"):
        load("csv", tmp_path, label_column="label")


def test_a_missing_value_names_its_column_and_row(tmp_path: Path) -> None:
    frame = small_frame()
    frame.loc[6, "colour"] = None
    frame.loc[9, "x"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetIntegrityError, match=r"column 'colour' has a missing value in row 7 .*drop_missing"):
        load("csv", tmp_path / "t.csv", label_column="label")


def test_a_test_category_never_seen_in_train_is_named(tmp_path: Path) -> None:
    frame = small_frame()
    frame.loc[35, "colour"] = "green"
    frame[:30].to_csv(tmp_path / "train.csv", index=False)
    frame[30:].to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DatasetIntegrityError, match=r"column 'colour' has the value 'green' in the test split"):
        load("csv", tmp_path, label_column="label")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.linspace(0.1, 3.9, 40), r"holds 0\.1: labels that are not classes"),
        (np.arange(40) * 0 + 1, r"single class \['1'\]"),
    ],
)
def test_labels_that_are_not_classes_are_refused(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    frame = small_frame()
    frame["label"] = labels
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetIntegrityError, match=message):
        load("csv", tmp_path / "t.csv", label_column="label")


def test_more_distinct_labels_than_classes_can_be_is_refused(tmp_path: Path) -> None:
    rows = MAX_CLASSES + 1
    pd.DataFrame({"x": np.arange(rows, dtype=float), "id": np.arange(rows)}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetIntegrityError, match=rf"label column 'id' has {rows} distinct values: labels that are not"):
        load("csv", tmp_path / "t.csv", label_column="id")


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetIntegrityError, match="not a readable CSV table"):
        load("csv", tmp_path / "empty.csv", label_column="label")
    (tmp_path / "ragged.csv").write_text("a,label\n1,2\n3,4,5,6\n")
    with pytest.raises(DatasetIntegrityError, match="not a readable CSV table"):
        load("csv", tmp_path / "ragged.csv", label_column="label")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetIntegrityError, match="not a readable Parquet file"):
        load("parquet", tmp_path / "bad.parquet", label_column="label")


# ----------------------------------------------------------------------------------- arrays


def test_feature_vector_arrays_become_a_tabular_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(50, 4)), rng.normal(size=(10, 4))
    y_train, y_test = np.arange(50) % 3, np.arange(10) % 3
    dataset = tabular_dataset("npz", x_train, y_train, x_test, y_test, source=tmp_path, checksums={"d.npz": "0" * 32})
    assert [f.name for f in dataset.features] == ["f0", "f1", "f2", "f3"]
    assert dataset.classes == ("0", "1", "2") and dataset.train.images.dtype == np.float32
    assert np.array_equal(dataset.train.labels, y_train) and dataset.tabular
    named = tabular_dataset("npz", x_train, np.array(["a", "b"] * 25), x_test, np.array(["b", "a"] * 5),
                            source=tmp_path, checksums={}, feature_names=["w", "x", "y", "z"], classes=["b", "a"])
    assert named.classes == ("b", "a") and named.train.labels[0] == 1 and named.features[3].name == "z"
    with pytest.raises(DatasetIntegrityError, match="x_train has 4 features but x_test 3"):
        tabular_dataset("npz", x_train, y_train, x_test[:, :3], y_test, source=tmp_path, checksums={})
    with pytest.raises(DatasetIntegrityError, match="x_test holds 10 records but y_test 9 labels"):
        tabular_dataset("npz", x_train, y_train, x_test, y_test[:9], source=tmp_path, checksums={})
    with pytest.raises(DatasetIntegrityError, match=r"x_train: feature vectors must be a numeric \(N, F\) array"):
        tabular_dataset("npz", x_train[:, :, None], y_train, x_test, y_test, source=tmp_path, checksums={})
    with pytest.raises(DatasetIntegrityError, match="y_train: labels must be class indices 0..1"):
        tabular_dataset("npz", x_train, y_train, x_test, y_test, source=tmp_path, checksums={}, classes=["a", "b"])
