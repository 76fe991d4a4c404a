"""The monitoring store on SQLite and on a real PostgreSQL server: round trips of every table,
idempotent payload replay, feedback upserts, the drift window, measurements, deletion.

PostgreSQL runs when ``MODELCYCLE_TEST_POSTGRES_URL`` names a database (``.ci/run`` starts a
server on loopback and sets it); otherwise those cases are skipped saying what to install.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from modelcycle.core.monitoring.drift import input_statistics
from modelcycle.core.monitoring.errors import UnknownScoringIdError
from modelcycle.platforms.local.journal import encode_frame, frames_to_rows, parse_frames
from modelcycle.core.monitoring.store import MonitoringStore, mask_url, resolve_database_url

@pytest.fixture
def store(database_url: str) -> MonitoringStore:
    """The store on an empty SQLite file, then on a fresh PostgreSQL schema (conftest)."""
    return MonitoringStore(database_url)


@pytest.fixture
def deployment(store: MonitoringStore) -> Iterator[str]:
    """A deployment id of this test only; its records are removed afterwards (shared PostgreSQL)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    store.delete_records(name)


def _records(images: np.ndarray, deployment: str, per_request: int = 1, start: float | None = None) -> tuple[list[tuple], np.ndarray]:
    """Rows for ``images`` as the endpoint journals them, and their probabilities."""
    rng = np.random.default_rng(len(images))
    probabilities = rng.dirichlet(np.ones(10), size=len(images)).astype(np.float32)
    start = time.time() if start is None else start
    journal = b"".join(
        encode_frame(uuid.uuid4().hex, start + i, 2.5, images[i:i + per_request].reshape(-1, 1, 28, 28),
                     probabilities[i:i + per_request])
        for i in range(0, len(images), per_request)
    )
    frames, consumed, needed, corrupt = parse_frames(journal)
    assert consumed == len(journal) and not needed and not corrupt
    return frames_to_rows(frames, deployment, "run-1"), probabilities


def test_sqlite_store_runs_in_wal_mode(tmp_path: Path) -> None:
    store = MonitoringStore(f"sqlite:///{tmp_path / 'nested' / 'monitoring.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert (tmp_path / "nested" / "monitoring.db").is_file()


def test_payload_round_trip_and_idempotent_replay(store: MonitoringStore, deployment: str, mnist_test_images) -> None:
    images, _ = mnist_test_images
    rows, probabilities = _records(images[:12], deployment, per_request=4)
    store.ingest(rows, ("j" + deployment, deployment, 1234))
    store.ingest(rows, ("j" + deployment, deployment, 5678))  # a replay: nothing new, offset moves
    assert store.payload_count(deployment) == 12
    assert store.journal_offset("j" + deployment) == 5678

    stored = store.payload_records(deployment)
    assert [r["scoring_id"] for r in stored] == [row[0] for row in rows]
    assert stored[5]["scoring_id"].endswith("-1") and stored[5]["request_id"] == stored[4]["request_id"]
    mean, ink = input_statistics(images[:12])
    for i, record in enumerate(stored):
        assert bytes(record["scoring_input"]) == images[i].tobytes()
        assert np.array_equal(np.frombuffer(bytes(record["probability"]), "<f4"), probabilities[i])
        assert record["prediction"] == int(probabilities[i].argmax())
        assert record["prediction_probability"] == pytest.approx(float(probabilities[i].max()), abs=1e-7)
        assert record["mean_intensity"] == pytest.approx(mean[i], abs=1e-12)
        assert record["ink_fraction"] == pytest.approx(ink[i], abs=1e-12)
        assert record["deployment_id"] == deployment and record["asset_revision"] == "run-1"
        assert record["latency_ms"] == pytest.approx(2.5)
    with store.engine.connect() as conn:  # one row per scoring id
        total, distinct = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT scoring_id) FROM mc_payload WHERE deployment_id = :d"), {"d": deployment}).one()
    assert total == distinct == 12
    store.forget_journal("j" + deployment)
    assert store.journal_offset("j" + deployment) is None


def test_feedback_is_upserted_and_unknown_ids_store_nothing(store: MonitoringStore, deployment: str, mnist_test_images) -> None:
    images, labels = mnist_test_images
    rows, probabilities = _records(images[:6], deployment)
    store.ingest(rows)
    ids = [row[0] for row in rows]
    assert store.add_feedback({ids[0]: int(labels[0]), ids[1]: int(labels[1])}, deployment) == 2
    assert store.add_feedback({ids[0]: 9}, deployment) == 1  # a corrected label replaces the first
    assert store.feedback_count(deployment) == 2
    with pytest.raises(UnknownScoringIdError, match=r"1 unknown scoring_id\(s\): nope") as info:
        store.add_feedback({ids[2]: 1, "nope": 3}, deployment)
    assert info.value.unknown == ["nope"]
    with pytest.raises(UnknownScoringIdError):  # another deployment's record is unknown here too
        store.add_feedback({ids[3]: 1}, deployment + "-other")
    assert store.feedback_count(deployment) == 2

    data = store.quality_data(deployment, with_ids=True)
    order = np.argsort(data["scoring_ids"])
    got = dict(zip(data["scoring_ids"], data["labels"].tolist()))
    assert got == {ids[0]: 9, ids[1]: int(labels[1])}
    index = [ids.index(s) for s in np.array(data["scoring_ids"])[order]]
    assert np.array_equal(data["probabilities"][order], probabilities[index])
    assert np.array_equal(data["predictions"][order], probabilities[index].argmax(axis=1))


def test_drift_window_is_the_most_recent_records(store: MonitoringStore, deployment: str, mnist_test_images) -> None:
    images, _ = mnist_test_images
    rows, probabilities = _records(images[:30], deployment, start=1_000_000.0)  # timestamps 1e6 + i
    store.ingest(rows)
    window = store.drift_window(deployment, 10)
    assert len(window["prediction"]) == 10
    newest = probabilities[20:][::-1]
    assert np.array_equal(window["prediction"], newest.argmax(axis=1))
    assert np.allclose(window["confidence"], newest.max(axis=1), atol=1e-7)
    mean, ink = input_statistics(images[20:30][::-1])
    assert np.allclose(window["mean_intensity"], mean) and np.allclose(window["ink_fraction"], ink)
    assert len(store.drift_window(deployment, 1000)["prediction"]) == 30
    assert len(store.drift_window(deployment + "-none", 10)["prediction"]) == 0


def test_drift_window_since_a_cut_reaches_back_to_at_least(store: MonitoringStore, deployment: str, mnist_test_images) -> None:
    images, _ = mnist_test_images
    rows, probabilities = _records(images[:30], deployment, start=1_000_000.0)  # timestamps 1e6 + i
    store.ingest(rows)
    window = store.drift_window(deployment, 100, since=1_000_019.0, at_least=5)  # records 20..29 are newer
    assert window["scoring_timestamp"].tolist() == [1_000_000.0 + i for i in range(29, 19, -1)]
    assert np.array_equal(window["prediction"], probabilities[20:][::-1].argmax(axis=1))
    capped = store.drift_window(deployment, 4, since=1_000_019.0, at_least=2)
    assert capped["scoring_timestamp"].tolist() == [1_000_029.0, 1_000_028.0, 1_000_027.0, 1_000_026.0]
    # too few after the cut: the most recent at_least of any time (never more than the limit)
    reached = store.drift_window(deployment, 100, since=1_000_027.0, at_least=6)
    assert reached["scoring_timestamp"].tolist() == [1_000_000.0 + i for i in range(29, 23, -1)]
    assert len(store.drift_window(deployment, 3, since=1_000_029.0, at_least=6)["prediction"]) == 3
    assert len(store.drift_window(deployment, 100, since=1_000_029.0)["prediction"]) == 0


def test_latest_measurement_per_monitor_and_status(store: MonitoringStore, deployment: str) -> None:
    subscription = store.create_subscription(f"uc-{deployment}", deployment, None, None, [], {}, None)["id"]
    assert store.latest_measurement(subscription, "drift") is None
    for i, (monitor, status) in enumerate([("drift", "finished"), ("drift", "insufficient_data"), ("quality", "finished")]):
        store.add_measurement({"subscription_id": subscription, "monitor": monitor, "run_id": f"r{i}",
                               "timestamp": 100.0 + i, "status": status, "details": {"window": {"last": 50.0 + i}}})
    assert store.latest_measurement(subscription, "drift")["run_id"] == "r0"
    assert store.latest_measurement(subscription, "drift", "insufficient_data")["details"]["window"]["last"] == 51.0
    assert store.latest_measurement(subscription, "quality")["run_id"] == "r2"
    assert store.latest_measurement(subscription + "x", "quality") is None
    store.delete_records(deployment, subscription)


def test_subscriptions_measurements_and_deletion(store: MonitoringStore, deployment: str, mnist_test_images) -> None:
    images, labels = mnist_test_images
    use_case = f"uc-{deployment}"
    first = store.create_subscription(use_case, deployment, "run-1", "http://127.0.0.1:1", [{"name": "x"}], {"quality": {}}, {"records": 3})
    assert store.active_subscription(use_case)["id"] == first["id"]
    second = store.create_subscription(use_case, deployment, "run-1", None, [], {}, None)
    assert store.active_subscription(use_case)["id"] == second["id"]
    assert store.subscription(first["id"])["deleted_at"] is not None  # replaced
    assert store.subscription(second["id"])["payload_schema"] == []

    for i in range(3):
        store.add_measurement({
            "subscription_id": second["id"], "monitor": "quality", "run_id": f"r{i}", "timestamp": 100.0 + i,
            "status": "finished", "metrics": {"accuracy": 0.5 + i / 10}, "thresholds": [{"metric_id": "accuracy"}],
            "violations": [{"metric_id": "accuracy"}] if i == 0 else [], "records": {"feedback": 10},
            "details": {"confusion_matrix": [[1, 2], [3, 4]]},
        })
    history = store.measurements(second["id"])
    assert [m["run_id"] for m in history] == ["r0", "r1", "r2"]
    assert history[0]["issue_count"] == 1 and history[1]["issue_count"] == 0
    assert history[2]["metrics"] == {"accuracy": pytest.approx(0.7)} and history[0]["details"]["confusion_matrix"] == [[1, 2], [3, 4]]
    assert [m["run_id"] for m in store.measurements(second["id"], limit=2)] == ["r1", "r2"]
    assert len(store.measurements(use_case=use_case)) == 3

    rows, _ = _records(images[:4], deployment)
    store.ingest(rows)
    store.add_feedback({rows[0][0]: int(labels[0])}, deployment)
    assert store.delete_subscription(second["id"]) is True
    assert store.delete_subscription(second["id"]) is False
    assert store.active_subscription(use_case) is None
    assert store.delete_records(deployment, second["id"]) == {"payload_records": 4, "feedback_records": 1, "measurements": 3}
    assert store.payload_count(deployment) == 0


def test_database_url_resolution_and_masking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    assert resolve_database_url(None, tmp_path) == f"sqlite:///{tmp_path / 'monitoring.db'}"
    monkeypatch.setenv("MODELCYCLE_DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:5432/db")
    assert resolve_database_url(None, tmp_path) == "postgresql+psycopg://u:secret@127.0.0.1:5432/db"
    assert resolve_database_url(SecretStr("sqlite:///x.db"), tmp_path) == "sqlite:///x.db"  # config first
    masked = mask_url("postgresql+psycopg://u:secret@127.0.0.1:5432/db")
    assert "secret" not in masked and "u:***@127.0.0.1:5432/db" in masked
    assert "secret" not in repr(MonitoringStore(f"sqlite:///{tmp_path / 'm.db'}"))


def test_forwarding_marks_each_record_once_per_target(store: MonitoringStore, deployment: str, mnist_test_images) -> None:
    """What a remote backend (OpenScale) has not received yet: oldest first, paged, per target."""
    images, labels = mnist_test_images
    rows, probabilities = _records(images[:12], deployment, start=2_000_000.0)
    store.ingest(rows)
    ids = [row[0] for row in rows]
    target, other = f"payload-{deployment}", f"feedback-{deployment}"
    first = store.unforwarded_payload(deployment, target, 5)
    assert [r["scoring_id"] for r in first] == ids[:5]  # oldest first
    assert bytes(first[0]["scoring_input"]) == images[0].tobytes()
    store.mark_forwarded(target, ids[:5])
    store.mark_forwarded(target, ids[:5])  # idempotent
    assert [r["scoring_id"] for r in store.unforwarded_payload(deployment, target, 100)] == ids[5:]
    assert len(store.unforwarded_payload(deployment, other, 100)) == 12  # marks are per target

    store.add_feedback({ids[0]: int(labels[0]), ids[3]: 7}, deployment)
    pending = store.unforwarded_feedback(deployment, other, 10)
    assert {r["scoring_id"]: r["label"] for r in pending} == {ids[0]: int(labels[0]), ids[3]: 7}
    assert all(r["prediction"] == int(probabilities[ids.index(r["scoring_id"])].argmax()) for r in pending)
    store.mark_forwarded(other, [ids[0]])
    assert [r["scoring_id"] for r in store.unforwarded_feedback(deployment, other, 10)] == [ids[3]]
    assert store.forwarded_count(target) == 5
    store.forget_forwarded([target, other])
    assert store.forwarded_count(target) == store.forwarded_count(other) == 0
