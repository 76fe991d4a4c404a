"""Payload logging in a live endpoint: every scored record is stored with its input and output,
``/feedback`` attaches labels (4xx for unknown ids or bad bodies), and a SIGKILL under concurrent
load loses no answered request and duplicates none after a restart. Every endpoint process is
stopped by pid, also when a test fails."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from modelcycle.core.monitoring.errors import MonitoringError
from modelcycle.platforms.local.journal import drain_orphaned_journals, sampled
from modelcycle.platforms.local.payload import PayloadLogger
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.platforms.local.endpoints import process_alive, start_endpoint, stop_endpoint

TOKEN = "monitoring-test-token"
JSON = {"Content-Type": "application/json"}


def _stop(record: dict[str, Any] | None) -> None:
    if record is not None:
        stop_endpoint(record)
        assert not process_alive(record["pid"])


@pytest.fixture(scope="module")
def logged(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An endpoint with payload logging into SQLite and a bearer token."""
    work = tmp_path_factory.mktemp("logged")
    url = f"sqlite:///{work / 'monitoring.db'}"
    record = start_endpoint("logged", trained_model_dir, work / "run", token=TOKEN,
                            payload={"journal": str(work / "logged.journal"), "database_url": url})
    try:
        yield {**record, "database_url": url, "journal": work / "logged.journal"}
    finally:
        _stop(record)


@pytest.fixture
def http(logged: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=logged["url"], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        yield client


def _flush(http: httpx.Client) -> dict[str, Any]:
    response = http.post("/payload/flush")
    assert response.status_code == 200, response.text
    return response.json()


def _rows(document: dict[str, Any]) -> list[list[Any]]:
    return document["predictions"][0]["values"]


def test_every_scored_record_is_stored_with_its_input_and_output(http: httpx.Client, logged: dict[str, Any], mnist_test_images) -> None:
    import io

    images, _ = mnist_test_images
    single = http.post("/invocations", content=orjson.dumps(images[0].tolist()), headers=JSON)
    batch = http.post("/invocations", content=orjson.dumps({"input_data": [{"values": images[1:6].tolist()}]}), headers=JSON)
    buffer = io.BytesIO()
    np.save(buffer, images[6:9])
    npy = http.post("/invocations", content=buffer.getvalue(), headers={"Content-Type": "application/x-npy"})
    assert single.status_code == batch.status_code == npy.status_code == 200
    assert "scoring_ids" not in single.json()  # one image: its record id is the request's scoring_id
    batch_doc = batch.json()
    assert batch_doc["scoring_ids"] == [f"{batch_doc['scoring_id']}-{i}" for i in range(5)]
    _flush(http)

    store = MonitoringStore(logged["database_url"])
    expected = {single.json()["scoring_id"]: (images[0], _rows(single.json())[0])}
    expected.update({sid: (images[1 + i], _rows(batch_doc)[i]) for i, sid in enumerate(batch_doc["scoring_ids"])})
    records = {r["scoring_id"]: r for r in store.payload_records("logged")}
    for sid, (image, (label, probabilities)) in expected.items():
        record = records[sid]
        assert bytes(record["scoring_input"]) == image.tobytes()
        assert record["prediction"] == label
        assert np.allclose(np.frombuffer(record["probability"], "<f4"), probabilities, atol=1e-7)
        assert record["deployment_id"] == "logged" and len(record["asset_revision"]) == 32
        assert record["latency_ms"] > 0
    npy_records = [r for r in records.values() if r["request_id"] == npy.headers["x-scoring-id"]]
    assert sorted(bytes(r["scoring_input"]) for r in npy_records) == sorted(i.tobytes() for i in images[6:9])


def test_feedback_route(http: httpx.Client, logged: dict[str, Any], mnist_test_images) -> None:
    images, labels = mnist_test_images
    scored = http.post("/invocations", content=orjson.dumps({"instances": images[10:14].tolist()}), headers=JSON).json()
    ids = scored["scoring_ids"]
    store = MonitoringStore(logged["database_url"])
    before = store.feedback_count("logged")

    one = http.post("/feedback", json={"scoring_id": ids[0], "label": int(labels[10])})
    assert one.status_code == 200 and one.json() == {"stored": 1, "scoring_ids": [ids[0]]}
    listed = http.post("/feedback", json=[{"scoring_id": ids[1], "label": int(labels[11])}])
    assert listed.status_code == 200
    table = http.post("/feedback", json={"fields": ["scoring_id", "label"], "values": [[ids[2], int(labels[12])], [ids[3], 1]]})
    assert table.status_code == 200 and table.json()["stored"] == 2
    inline = http.post("/feedback", json={"fields": ["label", "scoring_input"],
                                          "values": [[int(labels[20]), images[20].tolist()], [int(labels[21]), images[21].tolist()]]})
    assert inline.status_code == 200, inline.text
    inline_ids = inline.json()["scoring_ids"]
    assert store.feedback_count("logged") == before + 6
    inline_records = {r["scoring_id"]: r for r in store.payload_records("logged") if r["scoring_id"] in inline_ids}
    assert bytes(inline_records[inline_ids[1]]["scoring_input"]) == images[21].tobytes()  # scored and logged
    data = store.quality_data("logged", with_ids=True)
    assert dict(zip(data["scoring_ids"], data["labels"].tolist()))[ids[0]] == int(labels[10])

    unknown = http.post("/feedback", json={"fields": ["scoring_id", "label"], "values": [[ids[0], 1], ["not-a-scoring-id", 2]]})
    assert unknown.status_code == 404
    assert "not-a-scoring-id" in unknown.json()["error"]["message"]
    assert dict(zip(*[store.quality_data("logged", with_ids=True)[k] for k in ("scoring_ids", "labels")]))[ids[0]] == int(labels[10])
    for body, fragment in (
        ({"scoring_id": ids[0], "label": 10}, "outside 0..9"),
        ({"scoring_id": ids[0], "label": "7"}, "integer class index"),
        ({"scoring_id": ids[0]}, "must look like"),
        ({"fields": ["scoring_id"], "values": [[ids[0]]]}, 'must include "label"'),
        ({"fields": ["scoring_id", "label"], "values": [[ids[0]]]}, "values[0] must be a list of 2"),
        ([], "no records"),
    ):
        response = http.post("/feedback", json=body)
        assert response.status_code == 400 and fragment in response.json()["error"]["message"], (body, response.text)
    assert http.post("/feedback", content=b"{not json", headers=JSON).status_code == 400
    assert store.feedback_count("logged") == before + 6


def test_monitoring_routes_need_the_token(logged: dict[str, Any]) -> None:
    with httpx.Client(base_url=logged["url"], timeout=30) as anonymous:
        assert anonymous.post("/payload/flush").status_code == 401
        assert anonymous.post("/feedback", json={"scoring_id": "x", "label": 1}).status_code == 401


class Load:
    """Six threads scoring on an endpoint until stopped, recording every scoring id answered 200."""

    def __init__(self, url: str, images: np.ndarray) -> None:
        self.answered: list[str] = []
        self.sent = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(url, images, w), daemon=True) for w in range(6)]
        for thread in self.threads:
            thread.start()

    def _client(self, url: str, images: np.ndarray, worker: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            i = worker
            while not self.stop.is_set():
                n = 1 if i % 4 else 3  # some requests carry a batch: ids {scoring_id}-{i}
                body = orjson.dumps({"instances": images[i % 60:i % 60 + n].tolist()})
                with self.lock:
                    self.sent += n
                try:
                    response = http.post("/invocations", content=body, headers=JSON)
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200:
                    document = response.json()
                    with self.lock:
                        self.answered.extend(document.get("scoring_ids") or [document["scoring_id"]])
                i += 6

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answered) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.answered) >= count, "the endpoint did not answer enough requests in time"

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _drainer_pid(endpoint_pid: int) -> int:
    """The endpoint's drainer child (found through /proc)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for children in Path(f"/proc/{endpoint_pid}/task").glob("*/children"):
            for pid in children.read_text().split():
                if b"modelcycle.platforms.local.drainer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"endpoint {endpoint_pid} has no drainer process")


def _once_each(store: MonitoringStore) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return tuple(conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT scoring_id) FROM mc_payload WHERE deployment_id = 'killed'")).one())


def test_sigkill_under_load_loses_no_answered_request(trained_model_dir: Path, tmp_path: Path, mnist_test_images) -> None:
    """1. SIGKILL the endpoint *and* its drainer mid-load before any drain (a 10-minute flush
    interval): the records exist only in the journal; the restart replays them — every
    200-answered record stored exactly once. 2. SIGKILL only the restarted endpoint mid-load: its
    drainer stores everything left and exits, with no restart."""
    images, _ = mnist_test_images
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    journal = tmp_path / "killed.journal"
    payload = {"journal": str(journal), "database_url": url, "flush_interval_ms": 600_000, "batch_records": 10**9}
    records: list[dict[str, Any]] = []
    drainers: list[int] = []
    load = None
    try:
        records.append(start_endpoint("killed", trained_model_dir, tmp_path / "run", payload=payload))
        drainers.append(_drainer_pid(records[-1]["pid"]))
        deadline = time.monotonic() + 60
        while not (journal / "drainer.json").exists() and time.monotonic() < deadline:  # its start-up pass
            time.sleep(0.05)
        load = Load(records[0]["url"], images)
        load.wait_for(400)
        os.killpg(records[0]["pid"], signal.SIGKILL)  # the endpoint and its drainer, mid-load
        load.join()
        _reap(records[0]["pid"])
        deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously: on a busy machine the
        while process_alive_pid(drainers[0]) and time.monotonic() < deadline:  # drainer may take a moment
            time.sleep(0.01)
        assert not process_alive(records[0]["pid"]) and not process_alive_pid(drainers[0])
        store = MonitoringStore(url)
        first = list(load.answered)
        assert store.payload_count("killed") == 0  # nothing was drained: only the journal has them

        records.append(start_endpoint("killed", trained_model_dir, tmp_path / "run", payload=payload))
        drainers.append(_drainer_pid(records[-1]["pid"]))
        status, _, _ = _post(records[1], "/payload/flush")
        assert status == 200
        assert set(first) - store.existing_scoring_ids(first, "killed") == set(), "answered records lost"
        total, distinct = _once_each(store)
        assert total == distinct and len(first) <= total <= load.sent

        load = Load(records[1]["url"], images)
        load.wait_for(300)
        os.kill(records[1]["pid"], signal.SIGKILL)  # the endpoint only: its drainer finishes the job
        load.join()
        _reap(records[1]["pid"])
        deadline = time.monotonic() + 60
        while process_alive_pid(drainers[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive_pid(drainers[1]), "the drainer outlived its endpoint"
        second = list(load.answered)
        assert set(second) - store.existing_scoring_ids(second, "killed") == set(), "answered records lost"
        total, distinct = _once_each(store)
        assert total == distinct and len(first) + len(second) <= total
        assert sorted(p.name for p in journal.glob("*.seg")) == []  # drained and retired
        assert drain_orphaned_journals(tmp_path / "run", store) == 0
    finally:
        if load is not None:
            load.join()
        for record in records:
            if process_alive(record["pid"]):
                stop_endpoint(record)
            assert not process_alive(record["pid"])
        for pid in drainers:
            if process_alive_pid(pid):
                os.kill(pid, signal.SIGKILL)


def _post(record: dict[str, Any], path: str) -> tuple[int, bytes, str]:
    from modelcycle.platforms.local.endpoints import request

    return request(record["host"], record["port"], "POST", path, b"{}", JSON)


@pytest.mark.parametrize("drain", ["process", "thread"])
def test_payload_logger_samples_and_survives_a_store_outage(tmp_path: Path, mnist_test_images, drain: str) -> None:
    """The logger the endpoint runs, in-process: deterministic sampling, forced records, and a
    store that is down at start and comes back later — with the drainer as a child process (what
    the endpoint runs) and as a thread."""
    images, _ = mnist_test_images
    database = tmp_path / "store.db"
    database.mkdir()  # a directory where the database file should be: the store cannot open
    # no background drain while the test breaks and mends the store: one between the directory's
    # removal and the broken file's creation would open a fresh database there
    logger = PayloadLogger(tmp_path / "ep.journal", f"sqlite:///{database}", "ep", "run", sampling_percentage=30,
                           drain=drain, flush_interval=60.0).start()
    drainer_pid = logger.process.pid if logger.process is not None else None
    deadline = time.monotonic() + 30  # the drainer process's start-up pass is over before the store changes
    while drainer_pid is not None and not (tmp_path / "ep.journal" / "drainer.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        probabilities = np.full((1, 10), 0.1, np.float32)
        ids = [uuid.uuid4().hex for _ in range(300)]
        logged = [sid for i, sid in enumerate(ids)
                  if logger.log(sid, images[i % 64].reshape(1, 1, 28, 28).astype(np.float32), probabilities, 1.0)]
        assert logged == [sid for sid in ids if sampled(sid, 30)] and 40 < len(logged) < 140
        forced = logger.log("forced-id", images[:2].reshape(2, 1, 28, 28), np.full((2, 10), 0.1, np.float32), 1.0, force=True)
        assert forced == ["forced-id-0", "forced-id-1"]
        database.rmdir()
        database.write_bytes(b"not a database")  # the store answers, with an error
        with pytest.raises(MonitoringError):
            logger.flush(timeout=30)
        database.unlink()  # the store is back
        logger.flush(timeout=30)
        assert logger.status()["drained_records"] == len(logged) + 2
        assert MonitoringStore(f"sqlite:///{database}").existing_scoring_ids(logged + forced, "ep") == set(logged + forced)
        late = logger.log("late-id", images[:1].reshape(1, 1, 28, 28), probabilities, 1.0, force=True)
    finally:
        logger.close()
    assert not list((tmp_path / "ep.journal").glob("*.seg"))  # the close drained and retired everything
    assert MonitoringStore(f"sqlite:///{database}").existing_scoring_ids(late, "ep") == set(late)
    if drainer_pid is not None:
        assert not process_alive_pid(drainer_pid)


def process_alive_pid(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
