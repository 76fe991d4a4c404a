"""Tabular records through training and back through the serving handlers, in process: the breast
cancer CSV (with a categorical column) trains the built-in ``fc`` nets of PyTorch and Keras as
their ``tabular`` examples configure them, and Lightning's; the manifest describes the records by name, the served model scores raw records as
well as training measured, and an image network on tabular data stops before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import write_use_case
from modelcycle.core.artifacts import read_manifest
from modelcycle.core.config import DataConfig
from modelcycle.core.datasets import load_dataset
from modelcycle.core.errors import ConfigError
from modelcycle.core.examples import example_config, example_files
from modelcycle.core.lifecycle import UseCase
from modelcycle.datasets.tabular import write_breast_cancer_csv

EXAMPLES = {"pytorch": "mnist-pytorch", "keras": "mnist-keras", "lightning": "mnist-lightning"}
HYPERPARAMETERS = {"epochs": 6, "batch_size": 32, "log_interval": 100}


def tabular_use_case(directory: Path, framework: str, architecture: str = "fc", **hyperparameters: Any) -> Path:
    csv = write_breast_cancer_csv(directory / "data" / "breast_cancer.csv")
    return write_use_case(
        directory / "uc", EXAMPLES[framework], name=f"bc-{framework}",
        data={"dataset": "csv", "path": str(csv), "options": {"label_column": "diagnosis"}},
        hyperparameters=HYPERPARAMETERS | hyperparameters, model={"architecture": architecture},
    )


def tabular_example(directory: Path, framework: str) -> Path:
    """What ``modelcycle init --example tabular`` writes: the config, the MLP's ``nets.py`` and
    the CSV (the same as ``write_breast_cancer_csv`` writes)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "modelcycle.yaml").write_text(example_config(framework, "tabular", f"bc-{framework}"))
    for relative, content in example_files(framework, "tabular").items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    shipped = (directory / "data" / "breast_cancer.csv").read_bytes()
    assert write_breast_cancer_csv(directory / "fresh.csv").read_bytes() == shipped  # the shipped CSV is current
    return directory


@pytest.fixture(scope="module", params=["pytorch", "keras"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    directory = tabular_example(tmp_path_factory.mktemp(request.param), request.param)
    return directory, UseCase(directory).train()


def test_the_fc_net_reaches_93_percent_on_the_held_out_split(trained: tuple[Path, dict[str, Any]]) -> None:
    _, outputs = trained
    assert outputs["metrics"]["test_accuracy"] >= 0.93


def test_the_manifest_describes_tabular_records_by_name(trained: tuple[Path, dict[str, Any]]) -> None:
    directory, outputs = trained
    manifest = read_manifest(Path(outputs["model_dir"]))
    schema = manifest.input_schema
    assert schema.kind == "tabular" and schema.shape == (31,) and schema.dtype == "float32"
    assert schema.field_names[:2] == ["mean radius", "mean texture"] and schema.field_names[-1] == "size_band"
    assert schema.fields[-1].kind == "categorical" and schema.fields[-1].categories == ("high", "low", "mid")
    assert manifest.preprocessing.scale == 1.0 and manifest.preprocessing.categories[-1] == 3
    assert manifest.preprocessing.input_width == 33
    assert manifest.classes == ["benign", "malignant"]
    assert manifest.dataset.name == "csv" and list(manifest.dataset.checksums) == ["breast_cancer.csv"]
    assert (manifest.dataset.train_records, manifest.dataset.test_records) == (456, 113)


def test_the_served_model_scores_raw_records_as_training_measured(trained: tuple[Path, dict[str, Any]]) -> None:
    from modelcycle.core.serving.pipeline import InferencePipeline

    directory, outputs = trained
    use_case = UseCase(directory)
    test = load_dataset("csv", settings=DataConfig.model_validate(use_case.config.data.model_dump())).test
    pipeline = InferencePipeline(outputs["model_dir"])  # model_fn rebuilds the net from the manifest
    probabilities = pipeline.predict(np.array(test.images))  # raw (N, F) records, encoded by predict_fn
    assert probabilities.shape == (len(test), 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    correct = int((probabilities.argmax(axis=1) == test.labels).sum())
    assert correct == round(outputs["metrics"]["test_accuracy"] * len(test))


def test_lightning_trains_the_fc_net_on_tabular_records(tmp_path: Path) -> None:
    directory = tabular_use_case(tmp_path, "lightning", epochs=2)
    outputs = UseCase(directory).train()
    assert outputs["metrics"]["test_accuracy"] >= 0.9
    assert read_manifest(Path(outputs["model_dir"])).input_schema.kind == "tabular"


@pytest.mark.parametrize(("framework", "architecture"),
                         [("pytorch", "cnn"), ("pytorch", "cifar"), ("lightning", "cnn"), ("keras", "cnn")])
def test_an_image_network_on_tabular_records_stops_before_training(tmp_path: Path, framework: str,
                                                                   architecture: str) -> None:
    directory = tabular_use_case(tmp_path, framework, architecture)
    with pytest.raises(ConfigError, match=rf"architecture {architecture} needs images.*use architecture: fc or your "
                                          "own model class"):
        UseCase(directory).train()
    assert not list((directory / ".modelcycle").glob("runs/*/model/modelcycle.json"))
