"""The installable package in tests/resources/modelcycle-example-extras: a dataset and a
governance backend added through entry points, found by name, shaped per the hookspecs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelcycle.core.config import DataConfig
from modelcycle.core.datasets import clear_cache, load_dataset, locate_dataset
from modelcycle.core.errors import ConfigError, DatasetIntegrityError, DatasetNotFoundError
from modelcycle.core.plugin_types import GovernanceBackend
from modelcycle.core.registry import PluginRegistry, plugin_distribution

DISTRIBUTION = "modelcycle-example-extras"
INSTALL = "install it: pip install tests/resources/modelcycle-example-extras (make test does)"


@pytest.fixture(autouse=True)
def installed() -> None:
    if plugin_distribution("dataset", "sklearn-digits") is None:
        pytest.fail(INSTALL)
    clear_cache()


@pytest.fixture(scope="module")
def digits_file() -> Path:
    from modelcycle_example_extras.digits import bundled_file

    path = bundled_file()
    assert path is not None and path.is_file()
    return path


def test_modelcycle_plugins_lists_both_with_their_distribution() -> None:
    run = subprocess.run([sys.executable, "-m", "modelcycle.cli", "plugins", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    listed = {(p["kind"], p["name"]): p for p in json.loads(run.stdout)}
    for key, module in ((("dataset", "sklearn-digits"), "modelcycle_example_extras.digits"),
                        (("governance", "ledger"), "modelcycle_example_extras.ledger")):
        assert key in listed, INSTALL
        assert listed[key]["distribution"] == DISTRIBUTION and listed[key]["version"] == "0.1.0"
        assert listed[key]["value"] == module


def test_digits_are_scikit_learns_scaled_to_bytes_with_a_fixed_stratified_split(digits_file: Path) -> None:
    from sklearn.datasets import load_digits

    dataset = load_dataset("sklearn-digits")
    pixels, labels = load_digits(return_X_y=True)
    assert dataset.name == "sklearn-digits" and dataset.classes == tuple("0123456789")
    assert len(dataset.train) == 1433 and len(dataset.test) == 364
    assert dataset.image_shape == (8, 8) and dataset.channels == 1
    assert dataset.train.images.dtype == np.uint8 and dataset.train.labels.dtype == np.int64
    assert dataset.train.images.max() == 255 and dataset.train.images.min() == 0
    images = np.rint(pixels * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
    together = np.concatenate([dataset.train.images, dataset.test.images])
    assert sorted(map(bytes, together)) == sorted(map(bytes, images))  # every record, once
    assert np.array_equal(dataset.test.images[0], images[0]) and dataset.test.labels[0] == labels[0] == 0
    assert np.bincount(dataset.test.labels).min() >= 35  # every digit in the test split
    assert dataset.source == digits_file.parent.resolve()
    assert dataset.checksums == {"digits.csv.gz": hashlib.md5(digits_file.read_bytes()).hexdigest()}
    assert load_dataset("sklearn-digits") is dataset
    assert not dataset.test.images.flags.writeable


def test_digits_take_an_explicit_path_and_no_options(tmp_path: Path, digits_file: Path) -> None:
    shutil.copyfile(digits_file, tmp_path / "digits.csv.gz")
    assert locate_dataset("sklearn-digits", tmp_path) == tmp_path / "digits.csv.gz"
    assert load_dataset("sklearn-digits", tmp_path / "digits.csv.gz").source == tmp_path.resolve()
    with pytest.raises(DatasetNotFoundError, match="holds no digits.csv.gz"):
        locate_dataset("sklearn-digits", tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="takes no options, got size"):
        load_dataset("sklearn-digits", settings=DataConfig(dataset="sklearn-digits", options={"size": 16}))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "digits.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetIntegrityError, match="not a gzip CSV"):
        load_dataset("sklearn-digits", tmp_path / "bad")


def test_the_ledger_backend_follows_the_governance_protocol() -> None:
    registry = PluginRegistry()
    registry.load_plugin("governance", "ledger")
    settings_class = registry.call_plugin("governance", "ledger", "governance_settings_class")
    with pytest.raises(ValueError, match="path"):
        settings_class.model_validate({})
    backend = registry.call_plugin("governance", "ledger", "governance_backend",
                                   settings=settings_class.model_validate({"path": "ledger.jsonl"}))
    assert isinstance(backend, GovernanceBackend) and backend.name == "ledger"


def test_the_ledger_plugin_module_stays_light() -> None:
    code = ("import sys, modelcycle_example_extras.ledger; "
            "print(sorted(m for m in ('pydantic', 'modelcycle_example_extras.backend') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # modelcycle --help imports it for add_commands
