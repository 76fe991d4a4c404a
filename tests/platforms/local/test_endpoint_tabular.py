"""A tabular model behind the endpoint app with payload logging: records scored over HTTP by
field name in shuffled order, 400s naming the field, ``prediction_label``, the payload journaled
as exact float32 values, inline tabular feedback, and per-feature drift on what was logged.

The model is a fixed linear classifier served by an in-process handler plugin (the training side
of tabular models is another part of the work); everything after ``predict_fn`` is the product's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from modelcycle.core.artifacts import (
    DatasetLineage,
    FieldSchema,
    InputSchema,
    Manifest,
    Preprocessing,
    hash_files,
    write_manifest,
)
from modelcycle.core.markers import hookimpl
from modelcycle.core.monitoring.drift import make_baseline
from modelcycle.core.monitoring.evaluation import evaluate_drift
from modelcycle.core.registry import PluginRegistry
from modelcycle.core.serving.pipeline import InferencePipeline
from modelcycle.platforms.local.app import create_app
from modelcycle.platforms.local.payload import PayloadLogger

FIELDS = (FieldSchema(name="radius"), FieldSchema(name="site", kind="categorical", categories=("left", "right")),
          FieldSchema(name="texture"))


class LinearHandlers:
    """A linear classifier on the encoded record: class 1 when the standardised radius > 0."""

    @hookimpl(tryfirst=True)
    def model_fn(self, model_dir: Path, context: Any) -> np.ndarray:
        return np.load(Path(model_dir) / "weights.npy")

    @hookimpl(tryfirst=True)
    def predict_fn(self, data: np.ndarray, model: np.ndarray, context: Any) -> np.ndarray:
        logits = context.normalize(data) @ model
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def _records(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(10.0, 2.0, n) + 2.0 * shift, rng.integers(0, 2, n), rng.normal(0.0, 1.0, n)],
                    axis=1).astype(np.float32)


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    weights = np.zeros((4, 2), np.float32)  # encoded: radius, site=left, site=right, texture
    weights[0] = (-4.0, 4.0)
    np.save(directory / "weights.npy", weights)
    manifest = Manifest(
        use_case="tabular", framework="pytorch", framework_version="0", modelcycle_version="0", run_id="r1",
        created_at=Manifest.now(), model_files=["weights.npy"],
        input_schema=InputSchema(kind="tabular", shape=(3,), dtype="float32", fields=FIELDS),
        preprocessing=Preprocessing(mean=(10.0, 0.0, 0.0), std=(2.0, 1.0, 1.0), categories=(0, 2, 0)),
        classes=["benign", "malignant"],
        dataset=DatasetLineage(name="csv", checksums={}, train_records=0, test_records=0),
        files=hash_files(directory),
    )
    write_manifest(directory, manifest)
    return directory


@pytest.fixture()
def served(model_dir: Path, tmp_path: Path) -> Iterator[tuple[TestClient, PayloadLogger, InferencePipeline]]:
    registry = PluginRegistry()
    registry.register(LinearHandlers(), name="test-linear")
    pipeline = InferencePipeline(model_dir, registry)
    logger = PayloadLogger(tmp_path / "ep.journal", f"sqlite:///{tmp_path / 'monitoring.db'}", "ep", "r1",
                           drain="thread", flush_interval=60.0).start()
    try:
        with TestClient(create_app(pipeline, "ep", payload_logger=logger, batching=False)) as client:
            yield client, logger, pipeline
    finally:
        logger.close()


def _score(client: TestClient, records: np.ndarray) -> Any:
    fields = ["texture", "radius", "site"]  # not the model's order
    values = [[float(r[2]), float(r[0]), FIELDS[1].categories[int(r[1])]] for r in records]
    return client.post("/invocations", content=orjson.dumps({"input_data": [{"fields": fields, "values": values}]}),
                       headers={"Content-Type": "application/json"})


def test_tabular_records_scored_logged_labelled_and_judged(
    served: tuple[TestClient, PayloadLogger, InferencePipeline],
) -> None:
    client, logger, pipeline = served
    records = _records(300, seed=1)
    response = _score(client, records)
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["fields"] == ["prediction", "prediction_label", "probability"]
    labels = [row[0] for row in prediction["values"]]
    assert labels == (records[:, 0] > 10.0).astype(int).tolist()
    assert {row[1] for row in prediction["values"]} == {"benign", "malignant"}

    bad = client.post("/invocations", content=orjson.dumps({"instances": [{"radius": 1, "site": "up", "texture": 0}]}),
                      headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "field 'site'" in bad.json()["error"]["message"]
    missing = client.post("/invocations", content=orjson.dumps({"input_data": [{"fields": ["radius"], "values": [[1]]}]}),
                          headers={"Content-Type": "application/json"})
    assert missing.status_code == 400 and "'site', 'texture'" in missing.json()["error"]["message"]

    inline = client.post("/feedback", content=orjson.dumps(
        {"fields": ["scoring_input", "label"], "values": [[[12.0, "right", 0.5], 1], [{"radius": 7, "site": "left", "texture": 0}, 0]]}))
    assert inline.status_code == 200, inline.text
    assert inline.json()["stored"] == 2

    assert client.post("/payload/flush").status_code == 200
    store = logger.open_store()
    window = store.drift_window("ep", 10_000, record_width=3)
    assert window["records"].shape == (302, 3)
    logged = {tuple(row) for row in window["records"].tolist()}
    assert {tuple(row) for row in records.tolist()} <= logged  # exact float32 values, model column order
    assert (12.0, 1.0, 0.5) in logged

    reference = _records(400, seed=2)
    baseline = make_baseline(pipeline.predict(reference), reference, None, {}, fields=FIELDS)
    config = SimpleNamespace(thresholds=[], window="last_n", last_n=300, min_samples=100, max_samples=10_000,
                             duration_s=3600.0)
    quiet = evaluate_drift(store, "ep", baseline, config)
    assert [v for v in quiet["violations"] if v["metric_id"] == "feature_drift"] == []

    assert _score(client, _records(300, seed=3, shift=2.0)).status_code == 200
    assert client.post("/payload/flush").status_code == 200
    drifted = evaluate_drift(store, "ep", baseline, config)
    violation = next(v for v in drifted["violations"] if v["metric_id"] == "feature_drift")
    assert violation["features"] == ["radius"]
