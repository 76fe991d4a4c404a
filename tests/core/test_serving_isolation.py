"""Experimenting never touches serving, and deploys swap without downtime — with real processes.

A monitored local endpoint (payload logging on, ``monitor`` done) answers requests sent in a
loop (fresh loopback connection each, bounded count) while ``sweep``, ``train --force`` and
``deploy --force`` run as separate ``modelcycle`` processes; every request must get 200.
Concurrent commands (``train --force`` + ``deploy --force``, two ``deploy --force``, two
``evaluate``) must end agreeing with each other and with what is served. Every endpoint process
a test started is stopped by pid at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import SMALL, deployed_and_monitored, write_use_case
from modelcycle.core.artifacts import read_manifest
from modelcycle.core.lifecycle import UseCase
from modelcycle.platforms.local.endpoints import process_alive, request

BODY = b"[" + b",".join([b"[" + b",".join([b"0"] * 784) + b"]"]) + b"]"  # one blank image
MAX_REQUESTS = 20_000  # the load loop's bound, far above what a command's duration needs
SERVER = b"modelcycle.platforms.local.server"


def _servers_of(directory: Path) -> list[int]:
    """Pids of live endpoint processes whose command line points into ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if SERVER in cmdline and str(directory).encode() in cmdline and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _cli(directory: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCYCLE_") or k in (
        "MODELCYCLE_DATA_DIR", "MODELCYCLE_CACHE_DIR")}
    return subprocess.Popen([sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


@dataclass
class Load:
    """Requests sent one after another (a new connection each) until stopped or bounded."""

    record: dict[str, Any]
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Content-Type": "application/json"}
        while not self.stop.is_set() and len(self.statuses) + len(self.failures) < MAX_REQUESTS:
            try:
                status, _, _ = request(self.record["host"], self.record["port"], "POST", "/invocations", BODY,
                                       headers, timeout=60)
                self.statuses.append(status)
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.stop.wait(0.005)


def _under_load(record: dict[str, Any], *commands: subprocess.Popen[str]) -> tuple[Load, list[tuple[int, str, str]]]:
    """Run ``commands`` to completion while a load loop scores on ``record``'s endpoint."""
    load = Load(record)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        results = [_finish(command) for command in commands]
    finally:
        load.stop.set()
        thread.join(120)
    return load, results


def _assert_all_answered(load: Load) -> None:
    assert load.failures == [], load.failures[:5]
    assert len(load.statuses) >= 20, "too few requests were sent during the command to show anything"
    assert set(load.statuses) == {200}, sorted(set(load.statuses))


def _served_name(record: dict[str, Any]) -> str | None:
    """The name of the endpoint that answers at ``record``'s URL (its runtime path answers 200
    only for its own name)."""
    status, _, _ = request(record["host"], record["port"], "POST", f"/endpoints/{record['name']}/invocations", BODY,
                           {"Content-Type": "application/json"}, timeout=60)
    return record["name"] if status == 200 else None


@pytest.fixture
def monitored(trained_model_dir: Path, tmp_path: Path, data_dir: Path) -> Iterator[Path]:
    """A use case trained (state → the session's model), deployed and monitored; every endpoint
    process started in it is stopped by pid afterwards."""
    directory = write_use_case(tmp_path / "uc", name="isolated", tracking={"enabled": False}, **SMALL)
    try:
        with deployed_and_monitored(directory, trained_model_dir):  # stops the recorded endpoint
            yield directory
    finally:
        for pid in _servers_of(directory):  # and any other endpoint process a test left behind
            os.kill(pid, signal.SIGKILL)
        assert _servers_of(directory) == []


def _deployed(directory: Path) -> dict[str, Any]:
    return UseCase(directory).state().stage("deploy").outputs


#: the experiments train on a smaller slice than the served model: what is checked is the endpoint
FEWER_IMAGES = ("--set", "data.train_limit=500", "--set", "data.test_limit=100")


@pytest.mark.parametrize("command", [
    ("sweep", "--param", "hidden_channels=3,4", *FEWER_IMAGES),
    ("train", "--force", *FEWER_IMAGES),
], ids=["sweep", "train-force"])
def test_experimenting_leaves_the_monitored_endpoint_serving(monitored: Path, command: tuple[str, ...]) -> None:
    before = UseCase(monitored).state()
    record = before.stage("deploy").outputs
    trained_before = before.stage("train").outputs["run_id"]

    load, [(code, out, err)] = _under_load(record, _cli(monitored, *command))

    assert code == 0, out + err
    _assert_all_answered(load)
    after = UseCase(monitored).state()
    assert after.stage("train").outputs["run_id"] != trained_before  # it did train
    assert after.stage("deploy").status == "done" and after.stage("deploy").outputs == record
    assert after.stage("monitor").status == "done"
    assert process_alive(record["pid"]) and _servers_of(monitored) == [record["pid"]]
    status = UseCase(monitored).status()
    assert status["deployed"] is True and status["endpoint"]["status"] == "InService"
    assert status["endpoint"]["run_id"] == trained_before  # still serving what was deployed


def test_deploy_force_swaps_without_failing_a_request(monitored: Path) -> None:
    old = _deployed(monitored)

    load, [(code, out, err)] = _under_load(old, _cli(monitored, "deploy", "--force"))

    assert code == 0, out + err
    _assert_all_answered(load)
    new = _deployed(monitored)
    assert new["pid"] != old["pid"] and new["inherited_from"] == old["pid"]
    assert new["url"] == old["url"]  # the listening socket was handed over: same URL, port 0 too
    assert not process_alive(old["pid"])
    assert _servers_of(monitored) == [new["pid"]]
    assert f"pid {new['pid']}" in out and new["url"] in out


def test_concurrent_train_and_deploy_agree_with_what_is_served(monitored: Path) -> None:
    train = _cli(monitored, "train", "--force")
    deploy = _cli(monitored, "deploy", "--force")
    (train_code, train_out, train_err), (deploy_code, deploy_out, deploy_err) = _finish(train), _finish(deploy)
    assert train_code == 0, train_out + train_err
    assert deploy_code == 0, deploy_out + deploy_err

    record = _deployed(monitored)
    served_run = re.search(r"serving run ([0-9a-f]{32})", deploy_out).group(1)  # type: ignore[union-attr]
    assert record["run_id"] == served_run
    assert record["name"].endswith(served_run[:8]) and _served_name(record) == record["name"]
    assert read_manifest(Path(record["model_dir"])).run_id == served_run
    assert record["model_dir"].encode() in Path(f"/proc/{record['pid']}/cmdline").read_bytes()
    assert _servers_of(monitored) == [record["pid"]]
    assert UseCase(monitored).endpoint()["status"] == "InService"  # type: ignore[index]


def test_two_concurrent_deploys_report_the_same_endpoint(monitored: Path) -> None:
    first, second = _cli(monitored, "deploy", "--force"), _cli(monitored, "deploy", "--force")
    results = [_finish(first), _finish(second)]
    for code, out, err in results:
        assert code == 0, out + err
    reported = [re.search(r"url (\S+)\s+status (\S+)\s+pid (\d+)", out).groups() for _, out, _ in results]  # type: ignore[union-attr]
    assert reported[0] == reported[1]
    url, status, pid = reported[0]
    record = _deployed(monitored)
    assert (record["url"], int(pid), status) == (url, record["pid"], "InService")
    assert _servers_of(monitored) == [record["pid"]]


def test_two_concurrent_evaluations_both_succeed(monitored: Path) -> None:
    use_case = UseCase(monitored)
    use_case.log_payload(samples=600)  # above drift's min_samples (500): both monitors measure
    use_case.log_feedback(samples=200)
    plots = monitored / ".modelcycle" / "plots"

    runs = [_cli(monitored, "evaluate") for _ in range(2)]
    results = [_finish(run) for run in runs]

    for code, out, err in results:
        assert code == 0, out + err
        assert "Traceback" not in err
    assert {"drift.png", "confusion_matrix.png", "metric_history.png"} <= {p.name for p in plots.iterdir()}
    assert [p.name for p in plots.iterdir() if ".tmp" in p.name] == []  # no temporary file left behind


def test_deploy_stops_an_endpoint_a_killed_deploy_left_unrecorded(monitored: Path) -> None:
    """A deploy SIGKILLed after its endpoint answered but before the state named it leaves that
    process sharing the URL; the next deploy stops it, so only the recorded endpoint serves."""
    from modelcycle.platforms.local.endpoints import start_endpoint

    old = _deployed(monitored)
    work = monitored / ".modelcycle"
    orphan = start_endpoint(old["name"], Path(old["model_dir"]), work / "endpoints", slot=work / "endpoints",
                            instance=f"{old['name']}.deadbeef")
    assert orphan["url"] == old["url"] and sorted(_servers_of(monitored)) == sorted([old["pid"], orphan["pid"]])

    code, out, err = _finish(_cli(monitored, "deploy", "--force"))

    assert code == 0, out + err
    new = _deployed(monitored)
    assert not process_alive(orphan["pid"]) and not process_alive(old["pid"])
    assert _servers_of(monitored) == [new["pid"]]
