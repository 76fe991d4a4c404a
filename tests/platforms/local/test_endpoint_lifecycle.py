"""start_endpoint / endpoint_status / stop_endpoint: the record, the process behind it (by pid),
and failures that must leave no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelcycle.core.errors import EndpointError
from modelcycle.platforms.local.endpoints import (
    endpoint_status,
    process_alive,
    start_endpoint,
    stop_endpoint,
)
from modelcycle.platforms.local.server import is_loopback

SERVER_MODULE = b"modelcycle.platforms.local.server"


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _gone(pid: int) -> bool:
    """The pid no longer names a running endpoint server (absent, or reused by something else)."""
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return True
    assert state != "Z", f"pid {pid} is a zombie: stop_endpoint did not reap it"
    return SERVER_MODULE not in cmdline


def _refuses_connections(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        return probe.connect_ex((host, port)) != 0


@pytest.fixture
def started(trained_model_dir: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh endpoint for one test; stopped by pid whatever the test did."""
    record = start_endpoint("lifecycle", trained_model_dir, tmp_path / "run")
    try:
        yield record
    finally:
        stop_endpoint(record)
        if process_alive(record["pid"]):
            _kill([record["pid"]])


def test_record_describes_a_live_loopback_endpoint(started: dict[str, Any], trained_model_dir: Path) -> None:
    record = started
    assert record["name"] == "lifecycle" and record["platform"] == "local"
    assert record["status"] == "InService" and record["auth"] is False
    assert is_loopback(record["host"])
    assert isinstance(record["port"], int) and record["port"] > 0
    assert record["url"] == f"http://127.0.0.1:{record['port']}"
    assert record["model_dir"] == str(trained_model_dir)
    assert process_alive(record["pid"])
    cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
    assert SERVER_MODULE in cmdline and str(trained_model_dir).encode() in cmdline
    ready = json.loads(Path(record["ready_file"]).read_text())
    assert ready["pid"] == record["pid"] and ready["port"] == record["port"]
    assert Path(record["log"]).is_file()
    assert endpoint_status(record) == "InService"
    with httpx.Client(base_url=record["url"], timeout=30, trust_env=False) as client:
        assert client.get("/ping").status_code == 200
        response = client.post("/invocations", json=[[0] * 784])
        assert response.status_code == 200 and len(response.json()["predictions"][0]["values"]) == 1


def test_stop_ends_the_process_and_frees_the_port(started: dict[str, Any]) -> None:
    record = started
    pid, port = record["pid"], record["port"]
    assert not _refuses_connections("127.0.0.1", port)
    assert stop_endpoint(record) == 1
    assert not process_alive(pid)
    assert _gone(pid)
    assert _refuses_connections("127.0.0.1", port)
    assert not Path(record["ready_file"]).exists()
    assert endpoint_status(record) == "Stopped"
    assert stop_endpoint(record) == 0  # idempotent: nothing left to stop


def test_two_endpoints_get_distinct_ports_and_stop_independently(trained_model_dir: Path, tmp_path: Path) -> None:
    records: list[dict[str, Any]] = []
    try:
        records.append(start_endpoint("one", trained_model_dir, tmp_path / "run"))
        records.append(start_endpoint("two", trained_model_dir, tmp_path / "run"))
        one, two = records
        assert one["port"] != two["port"] and one["pid"] != two["pid"]
        stop_endpoint(one)
        assert not process_alive(one["pid"]) and _gone(one["pid"])
        assert endpoint_status(two) == "InService"
        with httpx.Client(base_url=two["url"], timeout=30, trust_env=False) as client:
            assert client.post("/endpoints/two/invocations", json=[[0] * 784]).status_code == 200
            assert client.post("/endpoints/one/invocations", json=[[0] * 784]).status_code == 404
    finally:
        for record in records:
            stop_endpoint(record)
    assert all(not process_alive(record["pid"]) for record in records)


def test_endpoint_killed_from_outside_reports_stopped(started: dict[str, Any]) -> None:
    record = started
    os.kill(record["pid"], signal.SIGKILL)
    os.waitpid(record["pid"], 0)
    assert not process_alive(record["pid"])
    assert endpoint_status(record) == "Stopped"
    assert stop_endpoint(record) == 1  # the stale ready file is removed
    assert not Path(record["ready_file"]).exists()


def test_start_without_a_manifest_fails_with_the_log_tail_and_leaves_no_process(tmp_path: Path) -> None:
    model_dir = tmp_path / "not-a-model"
    model_dir.mkdir()
    (model_dir / "model.pth").write_bytes(b"weights without a manifest")
    try:
        with pytest.raises(EndpointError) as info:
            start_endpoint("broken", model_dir, tmp_path / "run", timeout=60)
        message = str(info.value)
        assert "'broken'" in message and "exited with code" in message
        assert "modelcycle.json is missing" in message  # from the server's log, not our guess
        assert str(tmp_path / "run" / "broken.log") in message
        assert _processes_mentioning(str(model_dir)) == []
    finally:
        _kill(_processes_mentioning(str(model_dir)))


def test_start_with_corrupt_weights_fails_and_leaves_no_process(trained_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "corrupt-model"
    shutil.copytree(trained_model_dir, model_dir)
    (model_dir / "model.pth").write_bytes(b"not a torch file")
    try:
        with pytest.raises(EndpointError) as info:
            start_endpoint("corrupt", model_dir, tmp_path / "run", timeout=60)
        assert "exited with code" in str(info.value)
        assert _processes_mentioning(str(model_dir)) == []
    finally:
        _kill(_processes_mentioning(str(model_dir)))


# -- handing the listening socket to a successor (zero-downtime redeploys) ----------------------


def test_a_successor_in_the_same_slot_takes_the_socket_and_serves_alone_after_the_old_stops(
        trained_model_dir: Path, tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    records: list[dict[str, Any]] = []
    try:
        records.append(start_endpoint("ep", trained_model_dir, tmp_path / "run", slot=slot, instance="ep.1"))
        records.append(start_endpoint("ep", trained_model_dir, tmp_path / "run", slot=slot, instance="ep.2"))
        old, new = records
        assert old["inherited_from"] is None and new["inherited_from"] == old["pid"]
        assert new["port"] == old["port"] and new["url"] == old["url"] and new["pid"] != old["pid"]
        assert old["ready_file"] != new["ready_file"] and old["log"] != new["log"]
        stop_endpoint(old)
        assert _gone(old["pid"]) and Path(new["ready_file"]).exists()
        assert endpoint_status(new) == "InService"
        with httpx.Client(base_url=new["url"], timeout=30, trust_env=False) as client:
            assert client.post("/invocations", json=[[0] * 784]).status_code == 200
        third = start_endpoint("ep", trained_model_dir, tmp_path / "run", slot=slot, instance="ep.3")
        records.append(third)
        assert third["inherited_from"] == new["pid"] and third["port"] == new["port"]  # the slot moved on
    finally:
        for record in records:
            stop_endpoint(record)
    assert all(_gone(record["pid"]) for record in records)
    assert _refuses_connections("127.0.0.1", records[0]["port"])


def test_a_failed_successor_leaves_the_old_endpoint_serving_and_offering(trained_model_dir: Path, tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    broken = tmp_path / "broken-model"
    shutil.copytree(trained_model_dir, broken)
    (broken / "model.pth").write_bytes(b"not a torch file")
    records: list[dict[str, Any]] = []
    try:
        records.append(start_endpoint("ep", trained_model_dir, tmp_path / "run", slot=slot, instance="ep.1"))
        old = records[0]
        with pytest.raises(EndpointError, match="exited with code"):
            start_endpoint("ep", broken, tmp_path / "run", slot=slot, instance="ep.2", timeout=60)
        assert endpoint_status(old) == "InService"
        records.append(start_endpoint("ep", trained_model_dir, tmp_path / "run", slot=slot, instance="ep.3"))
        assert records[1]["inherited_from"] == old["pid"] and records[1]["port"] == old["port"]
    finally:
        for record in records:
            stop_endpoint(record)
        _kill(_processes_mentioning(str(broken)))


def test_a_successor_on_another_port_binds_its_own(trained_model_dir: Path, tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    with socket.socket() as probe:  # a free port, released before the endpoint binds it
        probe.bind(("127.0.0.1", 0))
        fixed = probe.getsockname()[1]
    records: list[dict[str, Any]] = []
    try:
        records.append(start_endpoint("ep", trained_model_dir, tmp_path / "run", slot=slot, instance="ep.1"))
        records.append(start_endpoint("ep", trained_model_dir, tmp_path / "run", port=fixed, slot=slot,
                                      instance="ep.2"))
        old, new = records
        assert new["port"] == fixed != old["port"] and new["inherited_from"] is None
        assert endpoint_status(old) == "InService" and endpoint_status(new) == "InService"
    finally:
        for record in records:
            stop_endpoint(record)


def _payload(run: Path, instance: str) -> dict[str, Any]:
    return {"journal": str(run / f"{instance}.journal"), "database_url": f"sqlite:///{run.parent / 'monitoring.db'}",
            "sampling_percentage": 100.0, "fsync": False, "flush_interval_ms": 200, "batch_records": 1000}


def test_stopped_endpoints_leave_no_drained_journal_and_few_logs(trained_model_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Redeploy after redeploy: a stopped process's drained journal is deleted and only the newest
    KEEP_LOGS logs of stopped processes stay; a killed process's journal that still holds records
    stays until it is drained."""
    from modelcycle.core.monitoring.store import MonitoringStore
    from modelcycle.platforms.local import endpoints
    from modelcycle.platforms.local.journal import drain_orphaned_journals

    monkeypatch.setattr(endpoints, "KEEP_LOGS", 2)
    run, slot = tmp_path / "endpoints", tmp_path / "slot"
    records: list[dict[str, Any]] = []
    try:
        for i in range(4):
            records.append(start_endpoint("ep", trained_model_dir, run, slot=slot, instance=f"ep.{i}",
                                          payload=_payload(run, f"ep.{i}")))
            with httpx.Client(base_url=records[-1]["url"], timeout=30, trust_env=False) as client:
                assert client.post("/invocations", json=[[0] * 784]).status_code == 200
            if i:
                stop_endpoint(records[i - 1])
        assert sorted(p.name for p in run.glob("*.journal")) == ["ep.3.journal"]  # the live one only
        assert sorted(p.name for p in run.glob("*.log")) == ["ep.1.log", "ep.2.log", "ep.3.log"]
        live = records[-1]
        with httpx.Client(base_url=live["url"], timeout=30, trust_env=False) as client:
            assert client.post("/invocations", json=[[0] * 784]).status_code == 200
        _kill([live["pid"]])  # no graceful stop: its journal keeps its segment
        stop_endpoint(live)
        deadline = time.monotonic() + 60  # its drainer process notices and exits by itself
        while _processes_mentioning("ep.3.journal") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (run / "ep.3.journal").is_dir(), "a journal holding records must stay"
        store = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")
        drain_orphaned_journals(run, store)
        assert not (run / "ep.3.journal").exists()
        with sqlite3.connect(tmp_path / "monitoring.db") as db:
            assert db.execute("SELECT count(*) FROM mc_payload").fetchone()[0] == 5  # nothing lost
    finally:
        for record in records:
            stop_endpoint(record)
            if process_alive(record["pid"]):
                _kill([record["pid"]])
