"""The platform hooks the monitoring service calls instead of knowing an endpoint's internals:
``flush_payload`` (the live endpoint's journal, then journals no process holds) and
``send_feedback`` (labelled records scored through ``/feedback``), called through the registry
on a live local endpoint with real MNIST images; SageMaker's answers."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelcycle.core.errors import EndpointError
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.core.registry import PluginRegistry
from modelcycle.platforms.local.endpoints import process_alive, start_endpoint, stop_endpoint
from modelcycle.platforms.local.journal import JournalWriter, encode_frame

TOKEN = "hooks-test-token"


@pytest.fixture(scope="module")
def logged(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live endpoint that journals its payload under ``work_dir/endpoints`` (no timed drain:
    only a flush moves records), with its store and work dir."""
    work = tmp_path_factory.mktemp("hooks") / ".modelcycle"
    url = f"sqlite:///{work.parent / 'monitoring.db'}"
    record = start_endpoint("hooked", trained_model_dir, work / "endpoints", token=TOKEN, payload={
        "journal": str(work / "endpoints" / "hooked.journal"), "database_url": url,
        "flush_interval_ms": 600_000, "batch_records": 10**9})
    try:
        yield {"record": record, "store": MonitoringStore(url), "work_dir": work}
    finally:
        stop_endpoint(record)
        assert not process_alive(record["pid"])


@pytest.fixture
def local() -> PluginRegistry:
    registry = PluginRegistry()
    registry.load_platform("local", "serving")
    return registry


def _npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images)
    return buffer.getvalue()


def test_flush_payload_stores_what_the_live_endpoint_answered(logged: dict[str, Any], local: PluginRegistry,
                                                             mnist_test_images) -> None:
    images, _ = mnist_test_images
    record, store = logged["record"], logged["store"]
    assert record["payload_logging"] is True
    ids = []
    for start in (0, 10, 20):
        status, body, _ = local.call_platform("local", "invoke_endpoint", endpoint=record, body=_npy(images[start:start + 10]),
                                              content_type="application/x-npy", accept="application/json", token=TOKEN)
        assert status == 200
        ids += orjson.loads(body)["scoring_ids"]
    assert store.existing_scoring_ids(ids, "hooked") == set()  # journaled only: the drain waits 10 minutes
    moved = local.call_platform("local", "flush_payload", endpoint=record, store=store, work_dir=logged["work_dir"], token=TOKEN)
    assert moved == 30 and store.existing_scoring_ids(ids, "hooked") == set(ids)
    assert local.call_platform("local", "flush_payload", endpoint=record, store=store, work_dir=logged["work_dir"], token=TOKEN) == 0


def test_flush_payload_drains_journals_no_endpoint_holds(logged: dict[str, Any], local: PluginRegistry, mnist_test_images) -> None:
    """A killed endpoint's journal (written here as it would have) reaches the store without an
    endpoint; the live endpoint's journal is left to it (it holds the lock)."""
    images, _ = mnist_test_images
    store, work_dir = logged["store"], logged["work_dir"]
    journal = work_dir / "endpoints" / "killed.journal"
    journal.mkdir()
    writer = JournalWriter(journal, "killed", "run-0")
    writer.open()
    scoring_id = uuid.uuid4().hex
    writer.append(encode_frame(scoring_id, time.time(), 1.0, images[:4].reshape(4, 1, 28, 28),
                               np.full((4, 10), 0.1, np.float32)))
    writer.close()
    moved = local.call_platform("local", "flush_payload", endpoint=None, store=store, work_dir=work_dir, token=None)
    assert moved == 4 and store.payload_count("killed") == 4
    assert not list(journal.glob("*.seg"))


def test_send_feedback_scores_labelled_records_in_batches(logged: dict[str, Any], local: PluginRegistry, mnist_test_images) -> None:
    images, labels = mnist_test_images
    record, store = logged["record"], logged["store"]
    rows = [[images[i % 64], int(labels[i % 64])] for i in range(130)]  # two /feedback requests
    assert local.call_platform("local", "send_feedback", endpoint=record, rows=rows, token=TOKEN) == 130
    assert store.feedback_count("hooked") == 130
    assert sorted(store.quality_data("hooked")["labels"].tolist()) == sorted(int(labels[i % 64]) for i in range(130))


def test_send_feedback_needs_payload_logging(endpoint: dict[str, Any], local: PluginRegistry, mnist_test_images) -> None:
    images, labels = mnist_test_images
    assert endpoint["payload_logging"] is False
    with pytest.raises(EndpointError, match="does not log its payload .*monitoring.payload.enabled"):
        local.call_platform("local", "send_feedback", endpoint=endpoint, rows=[[images[0], int(labels[0])]], token=None)


def test_a_sagemaker_endpoint_without_data_capture_logs_nothing_and_says_how_to_turn_it_on(tmp_path: Path) -> None:
    """(Capturing endpoints are tested against moto in tests/sagemaker/test_sagemaker_capture.py.)"""
    registry = PluginRegistry()
    registry.load_platform("sagemaker", "serving")
    endpoint = {"name": "sm-1", "platform": "sagemaker", "url": "https://runtime.sagemaker", "status": "InService"}
    store = MonitoringStore(f"sqlite:///{tmp_path / 'm.db'}")
    assert registry.call_platform("sagemaker", "flush_payload", endpoint=endpoint, store=store, work_dir=tmp_path, token=None) == 0
    with pytest.raises(EndpointError, match="sm-1 does not capture its traffic.*serving.data_capture.enabled"):
        registry.call_platform("sagemaker", "send_feedback", endpoint=endpoint, rows=[], token=None)
