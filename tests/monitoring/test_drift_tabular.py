"""Per-feature drift of tabular records: through the payload journal and the store into
``evaluate_drift``. One feature shifted by two standard deviations is flagged and named; clean
traffic stays quiet; the image path is unchanged."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from modelcycle.core.artifacts import FieldSchema, InputSchema
from modelcycle.core.monitoring.drift import feature_drift, make_baseline
from modelcycle.core.monitoring.evaluation import evaluate_drift
from modelcycle.core.monitoring.records import payload_schema
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.platforms.local.journal import encode_frame, frames_to_rows, parse_frames

FIELDS = (FieldSchema(name="radius"), FieldSchema(name="texture"),
          FieldSchema(name="site", kind="categorical", categories=("left", "right", "centre")))


def _records(n: int, seed: int, shift: float = 0.0, site: tuple[float, ...] = (0.5, 0.3, 0.2)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # radius ~ N(10, 2), moved by ``shift`` standard deviations
    return np.stack([rng.normal(10.0, 2.0, n) + shift * 2.0, rng.normal(0.0, 1.0, n),
                     rng.choice(3, n, p=site)], axis=1).astype(np.float32)


def _probabilities(records: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-(records[:, 0] - 10.0)))  # the class follows radius
    return np.stack([1 - p, p], axis=1).astype(np.float32)


def _config(**overrides: object) -> SimpleNamespace:
    values = {"thresholds": [], "window": "last_n", "last_n": 600, "min_samples": 100, "max_samples": 10_000,
              "duration_s": 3600.0}
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.fixture()
def store(tmp_path: Path) -> MonitoringStore:
    return MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")


def _log(store: MonitoringStore, deployment: str, records: np.ndarray) -> None:
    """Journal frames of 50 records each, parse them back and ingest: the endpoint's path."""
    now = time.time()
    frames = b"".join(encode_frame(uuid.uuid4().hex, now + i * 1e-3, 1.0, records[i:i + 50], _probabilities(records[i:i + 50]))
                      for i in range(0, len(records), 50))
    parsed, consumed, _, corrupt = parse_frames(frames)
    assert consumed == len(frames) and not corrupt
    store.ingest(frames_to_rows(parsed, deployment, "run"))


def _baseline() -> dict:
    reference = _records(400, seed=1)
    return make_baseline(_probabilities(reference), reference, None, {"split": "test"}, fields=FIELDS)


def test_records_round_trip_exactly_through_journal_and_store(store: MonitoringStore) -> None:
    records = _records(120, seed=3)
    _log(store, "ep", records)
    window = store.drift_window("ep", 1000, record_width=3)
    stored = window["records"][np.argsort(window["scoring_timestamp"], kind="stable")]
    np.testing.assert_array_equal(np.sort(stored, axis=0), np.sort(records, axis=0))
    row = store.payload_records("ep", limit=1)[0]
    assert row["mean_intensity"] is None and len(row["scoring_input"]) == 12


def test_shifted_feature_is_flagged_and_named(store: MonitoringStore) -> None:
    _log(store, "ep", _records(600, seed=7, shift=2.0))
    result = evaluate_drift(store, "ep", _baseline(), _config())
    assert result["status"] == "finished"
    features = {f["name"]: f for f in result["details"]["features"]}
    assert features["radius"]["statistic"] > 0.5 and features["radius"]["algorithm"] == "kolmogorov_smirnov"
    assert features["site"]["algorithm"] == "jensen_shannon"
    violation = next(v for v in result["violations"] if v["metric_id"] == "feature_drift")
    assert violation["features"] == ["radius"]
    assert "mean_intensity_drift" not in result["metrics"]


def test_clean_traffic_stays_quiet(store: MonitoringStore) -> None:
    _log(store, "ep", _records(600, seed=11))
    result = evaluate_drift(store, "ep", _baseline(), _config())
    assert result["status"] == "finished"
    assert result["metrics"]["feature_drift"] < 0.15
    assert result["violations"] == []


def test_a_categorical_shift_is_named() -> None:
    baseline = _baseline()
    moved = _records(500, seed=5, site=(0.05, 0.15, 0.8))
    statistics = {f["name"]: f["statistic"] for f in feature_drift(baseline["features"], moved)}
    assert statistics["site"] > 0.3 and statistics["radius"] < 0.15


def test_records_of_another_width_are_left_out_of_the_window(store: MonitoringStore) -> None:
    _log(store, "ep", _records(100, seed=2))
    _log(store, "ep", np.zeros((50, 4), np.float32))
    window = store.drift_window("ep", 1000, record_width=3)
    assert window["records"].shape == (100, 3) and len(window["prediction"]) == 100


def test_payload_schema_lists_the_fields() -> None:
    schema = payload_schema(InputSchema(kind="tabular", shape=(3,), fields=FIELDS))
    features = [c for c in schema if c.get("modeling_role") == "feature"]
    assert [c["name"] for c in features] == ["radius", "texture", "site"]
    assert features[2]["type"] == "string" and features[2]["categories"] == ["left", "right", "centre"]
    assert not any(c.get("modeling_role") for c in payload_schema(InputSchema(shape=(1, 28, 28))))
