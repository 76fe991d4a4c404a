"""The supervised payload drainer: a drainer killed under traffic is restarted (with a back-off),
the endpoint reports ``Degraded`` with the reason meanwhile and ``InService`` after, and every
record answered 200 is stored exactly once. Real endpoint and drainer processes, stopped by pid
also when a test fails."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from modelcycle.core.monitoring.errors import MonitoringError
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.platforms.local import plugin
from modelcycle.platforms.local.drainer import retry_delay
from modelcycle.platforms.local.endpoints import process_alive, request, start_endpoint, stop_endpoint
from modelcycle.platforms.local.payload import PayloadLogger
from modelcycle.platforms.local.supervisor import describe_exit

from test_payload_logging import Load, _drainer_pid, process_alive_pid

JSON = {"Content-Type": "application/json"}


def test_retry_delay_never_drains_sooner_than_the_interval() -> None:
    """A failed drain is retried with a back-off that starts at the flush interval: a store that
    is down does not get drained more often than a healthy one."""
    assert retry_delay(60.0, 0) == retry_delay(60.0, 1) == retry_delay(60.0, 7) == 60.0
    assert [retry_delay(1.0, n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert retry_delay(0.2, 1) == 0.4 and retry_delay(0.2, 1000) == 5.0


def test_describe_exit() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"


def _kill_and_watch(record: dict[str, Any], drainer: int) -> tuple[int, set[str], list[str]]:
    """SIGKILL the drainer, then poll the endpoint's status (what ``modelcycle status`` shows)
    until a new drainer runs and the endpoint is InService again; returns the new drainer's pid
    and the statuses and reasons seen meanwhile."""
    os.kill(drainer, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process_alive_pid(drainer) and time.monotonic() < deadline:  # SIGKILL lands asynchronously
        time.sleep(0.005)
    assert not process_alive_pid(drainer)
    seen: set[str] = set()
    reasons: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        described = plugin.describe_endpoint(record)
        seen.add(described["status"])
        if described["status"] == "Degraded":
            reasons.append(described["status_reason"])
        elif described["status"] == "InService":
            return _drainer_pid(record["pid"]), seen, reasons
        time.sleep(0.01)
    raise AssertionError(f"the endpoint did not come back InService; seen {seen}")


def test_a_killed_drainer_is_restarted_and_every_answered_record_stored_once(
        trained_model_dir: Path, tmp_path: Path, mnist_test_images) -> None:
    """The drainer is killed under traffic, again each time it is back (the back-off doubles:
    0.5 s, 1 s, 2 s, so the Degraded window grows until a status poll sees it even on a loaded
    machine); the endpoint answers throughout and stores every answered record once."""
    images, _ = mnist_test_images
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    payload = {"journal": str(tmp_path / "supervised.journal"), "database_url": url, "flush_interval_ms": 200,
               "batch_records": 50}
    record = start_endpoint("supervised", trained_model_dir, tmp_path / "run", payload=payload)
    load = None
    try:
        assert plugin.describe_endpoint(record)["status"] == "InService"
        drainer = _drainer_pid(record["pid"])
        load = Load(record["url"], images)
        load.wait_for(200)
        seen: set[str] = set()
        reasons: list[str] = []
        drainers = [drainer]
        for kill in range(1, 5):
            drainer, seen_now, reasons_now = _kill_and_watch(record, drainer)
            assert drainer not in drainers, "the killed drainer was not replaced"
            drainers.append(drainer)
            seen |= seen_now
            reasons += reasons_now
            load.wait_for(len(load.answered) + 50)  # traffic goes on, journaled meanwhile
            if kill >= 2 and "Degraded" in seen:
                break
        load.join()

        assert "Degraded" in seen and "Unhealthy" not in seen, seen
        assert all("payload drainer killed by SIGKILL" in r and "wait in the payload journal" in r for r in reasons)
        assert any(f"restart {n} in" in r for r in reasons for n in range(1, kill + 1)), reasons
        assert process_alive_pid(drainers[-1]) and not any(process_alive_pid(pid) for pid in drainers[:-1])
        described = plugin.describe_endpoint(record)
        assert described["status"] == "InService" and "status_reason" not in described

        status, body, _ = request(record["host"], record["port"], "POST", "/payload/flush", b"{}", JSON)
        assert status == 200, body
        assert orjson.loads(body)["drainer_restarts"] == kill
        answered = list(load.answered)
        store = MonitoringStore(url)
        assert set(answered) - store.existing_scoring_ids(answered, "supervised") == set(), "answered records lost"
        with store.engine.connect() as conn:
            total, distinct = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT scoring_id) FROM mc_payload WHERE deployment_id = 'supervised'")).one()
        assert total == distinct and len(answered) <= total <= load.sent
    finally:
        if load is not None:
            load.join()
        stop_endpoint(record)
        assert not process_alive(record["pid"])


def test_flush_while_the_drainer_is_down_names_the_fix_and_waits_for_its_restart(tmp_path: Path, mnist_test_images) -> None:
    """The logger the endpoint runs, in-process, with a long restart back-off: a flush asked
    while no drainer runs says why and what to do; once the drainer is back, everything is
    stored."""
    images, _ = mnist_test_images
    database = tmp_path / "store.db"
    logger = PayloadLogger(tmp_path / "ep.journal", f"sqlite:///{database}", "ep", "run", flush_interval=0.2)
    logger.start()
    assert logger.supervisor is not None
    logger.supervisor.backoff = 3.0
    try:
        probabilities = np.full((1, 10), 0.1, np.float32)
        ids = [uuid.uuid4().hex for _ in range(50)]
        for i, sid in enumerate(ids):
            logger.log(sid, images[i].reshape(1, 1, 28, 28), probabilities, 1.0)
        assert logger.health() == ("InService", None)
        killed = logger.supervisor.pid
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30  # until the supervisor noticed and scheduled the restart
        while "restart 1 in" not in (logger.health()[1] or "") and time.monotonic() < deadline:
            time.sleep(0.01)
        state, reason = logger.health()
        assert state == "Degraded" and "killed by SIGKILL" in reason and "restart 1 in" in reason
        assert logger.status()["state"] == "Degraded"
        with pytest.raises(MonitoringError) as info:
            logger.flush(timeout=0.5)
        assert "deploy --force" in str(info.value) and "killed by SIGKILL" in str(info.value)
        late = uuid.uuid4().hex  # journaled while no drainer runs
        logger.log(late, images[0].reshape(1, 1, 28, 28), probabilities, 1.0)
        logger.flush(timeout=60)  # waits for the restart, then for its drain
        assert logger.supervisor.pid != killed and logger.supervisor.restarts == 1
        assert logger.health() == ("InService", None)
        assert MonitoringStore(f"sqlite:///{database}").existing_scoring_ids(ids + [late], "ep") == set(ids + [late])
    finally:
        logger.close()
    assert not process_alive_pid(killed)


def test_ping_is_503_when_the_journal_cannot_take_records(tmp_path: Path) -> None:
    """The journal's file system below the reserve: the endpoint is Unhealthy, naming why."""
    logger = PayloadLogger(tmp_path / "ep.journal", f"sqlite:///{tmp_path / 'store.db'}", "ep", "run",
                           drain="thread", min_free_bytes=1 << 62).start()
    try:
        state, reason = logger.health()
        assert state == "Unhealthy" and "free" in reason and str(tmp_path / "ep.journal") in reason
    finally:
        logger.close()
    assert logger.health()[0] == "Unhealthy" and "closed" in logger.health()[1]
