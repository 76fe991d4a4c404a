"""Feature vectors from the ``npz`` and ``loader`` datasets: a 2-D ``x_train`` of shape ``(N, F)``
becomes a tabular dataset (numerical features named by ``feature_names`` or ``f0 .. f{F-1}``),
trains PyTorch's built-in ``fc`` net well above chance in process, and one record is served by
name through the inference pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import write_use_case
from modelcycle.core.artifacts import read_manifest
from modelcycle.core.config import DataConfig
from modelcycle.core.datasets import clear_cache, load_dataset, md5sum
from modelcycle.core.errors import DatasetIntegrityError
from modelcycle.core.lifecycle import UseCase

NAMES = ("age", "income", "score", "height")
CLASSES = ("low", "mid", "high")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCYCLE_CACHE_DIR", str(tmp_path / "cache"))
    clear_cache()


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` records of 4 features on very different scales, 3 classes told apart by the
    first two (well-separated Gaussian blobs); the other two are noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    informative = centres[labels] + rng.normal(0.0, 0.6, (n, 2))
    noise = rng.normal(0.0, 1.0, (n, 2))
    x = np.concatenate([informative, noise], axis=1) * np.array([10.0, 1000.0, 0.1, 1.0]) + np.array([40, 5e4, 0, 170])
    return x, labels


def _load(name: str, path: Path, **options: Any):
    return load_dataset(name, settings=DataConfig(dataset=name, path=str(path), options=options))


def _npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def _train_and_serve_one(tmp_path: Path, data: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """Train the ``fc`` net on ``data`` in process; return the outputs after checking one test
    record, sent by name in OpenScale's form (fields reversed), gets the class it should."""
    from modelcycle.core.serving.pipeline import InferencePipeline

    directory = write_use_case(tmp_path / "uc", "mnist-pytorch", name="vectors", data=data, model={"architecture": "fc"},
                               hyperparameters={"epochs": 3, "batch_size": 32, "log_interval": 100})
    outputs = UseCase(directory).train()
    assert outputs["metrics"]["test_accuracy"] >= 0.9, outputs["metrics"]  # chance is 1/3
    manifest = read_manifest(Path(outputs["model_dir"]))
    assert manifest.input_schema.kind == "tabular" and manifest.input_schema.field_names == fields

    x, labels = separable(40, seed=7)
    pipeline = InferencePipeline(outputs["model_dir"])
    record = x[int(np.argmax(labels == 2))]  # a record of the third class
    body = json.dumps({"input_data": [{"fields": fields[::-1], "values": [record[::-1].tolist()]}]}).encode()
    probabilities = pipeline.predict(pipeline.decode(body, "application/json"))
    assert probabilities.shape == (1, 3) and np.isclose(probabilities.sum(), 1.0, atol=1e-4)
    assert int(probabilities.argmax()) == 2, probabilities
    return outputs


def test_npz_feature_vectors_with_names_train_the_fc_net_and_serve_a_record(tmp_path: Path) -> None:
    x_train, y_train = separable(600, seed=1)
    x_test, y_test = separable(150, seed=2)
    path = _npz(tmp_path / "vectors.npz", x_train=x_train, y_train=np.asarray(CLASSES)[y_train], x_test=x_test,
                y_test=y_test, classes=np.asarray(CLASSES), feature_names=np.asarray(NAMES))
    data = _load("npz", path)
    assert data.tabular and [f.name for f in data.features] == list(NAMES)
    assert {f.kind for f in data.features} == {"numerical"} and data.classes == CLASSES
    assert data.train.images.shape == (600, 4) and data.train.images.dtype == np.float32
    assert data.train.labels.tolist() == y_train.tolist() and data.test.labels.tolist() == y_test.tolist()
    assert data.checksums == {"vectors.npz": md5sum(path)}

    outputs = _train_and_serve_one(tmp_path, {"dataset": "npz", "path": str(path)}, list(NAMES))
    assert read_manifest(Path(outputs["model_dir"])).classes == list(CLASSES)


LOADER = '''

def fetch(train=600, test=150):
    x_train, y_train = separable(train, seed=1)
    x_test, y_test = separable(test, seed=2)
    return x_train.tolist(), y_train, x_test, y_test
'''


def test_loader_feature_vectors_get_default_names_train_and_serve_a_record(tmp_path: Path) -> None:
    import inspect

    source = tmp_path / "source"
    source.mkdir()
    (source / "loader.py").write_text("import numpy as np\n\n\n" + inspect.getsource(separable) + LOADER)
    data = _load("loader", source, function="loader.py:fetch", arguments={"train": 60, "test": 30})
    assert [f.name for f in data.features] == ["f0", "f1", "f2", "f3"] and data.classes == ("0", "1", "2")
    assert len(data.train) == 60 and len(data.test) == 30
    assert data.checksums == {"loader.py": md5sum(source / "loader.py")}

    clear_cache()
    _train_and_serve_one(tmp_path, {"dataset": "loader", "path": str(source), "options": {"function": "loader.py:fetch"}},
                         ["f0", "f1", "f2", "f3"])


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x_test": np.zeros((5, 3, 3))},
     r"vectors\.npz: x_test: feature vectors must be a numeric \(N, F\) array, got float64 of shape \[5, 3, 3\]"),
    ({"x_test": np.zeros((5, 3))}, r"x_train has 4 features but x_test 3"),
    ({"feature_names": np.asarray(["a", "b"])}, r"feature_names must be 4 distinct names, got \['a', 'b'\]"),
    ({"feature_names": np.asarray(["a", "a", "b", "c"])}, r"feature_names must be 4 distinct names"),
    ({"feature_names": np.arange(4)}, r"feature_names must be a 1-D array of names \(strings\), got int64"),
    ({"x_train": np.full((10, 4), np.nan)}, r"x_train holds NaN or infinite values"),
    ({"y_train": np.arange(9)}, r"x_train holds 10 records but y_train 9 labels"),
    ({"classes": np.asarray(["a", "b"])}, r"y_train: labels must be class indices 0..1"),
])
def test_bad_feature_vectors_get_a_clear_error_naming_the_file(tmp_path: Path, arrays: dict[str, Any],
                                                               message: str) -> None:
    base = {"x_train": np.ones((10, 4)), "y_train": np.arange(10) % 3, "x_test": np.ones((5, 4)),
            "y_test": np.arange(5) % 3}
    with pytest.raises(DatasetIntegrityError, match=message):
        _load("npz", _npz(tmp_path / "vectors.npz", **{**base, **arrays}))


def test_feature_names_beside_images_and_2d_test_beside_image_train_are_refused(tmp_path: Path) -> None:
    images = {"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.array([0, 1, 0, 1]),
              "x_test": np.zeros((2, 5, 5), np.uint8), "y_test": np.array([0, 1])}
    with pytest.raises(DatasetIntegrityError, match="feature_names is given but x_train holds images"):
        _load("npz", _npz(tmp_path / "a.npz", **images, feature_names=np.asarray(["a"])))
    with pytest.raises(DatasetIntegrityError, match=r"x_test: shape \[2, 25\] is 2-D feature vectors while x_train "
                                                    "holds images"):
        _load("npz", _npz(tmp_path / "b.npz", **{**images, "x_test": np.zeros((2, 25))}))
