"""Tests of modelcycle.core.state: atomic state writes, the cross-process lock, interrupted stages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from modelcycle.core.errors import StateLockedError
from modelcycle.core.state import StageRecord, State, StateStore


def _dead_pid() -> int:
    """The pid of a Python process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process.wait(timeout=60) == 0
    return process.pid


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` by its pid if it still runs, and reap it."""
    if process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def _wait_for(path: Path, process: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"child exited with {process.returncode} before {path.name}: {err!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"child never wrote {path.name}")
        time.sleep(0.02)


# -- read / write -----------------------------------------------------------------------------


def test_read_of_a_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path / ".modelcycle")
    state = store.read()
    assert state == State()
    assert state.stages == {} and state.history == []
    assert not store.path.exists()
    assert not (tmp_path / ".modelcycle").exists()  # reading creates nothing


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    store = StateStore(tmp_path / ".modelcycle")
    state = State()
    record = state.stage("train")
    record.status, record.pid, record.outputs = "done", 123, {"run_id": "abc", "metrics": {"test_accuracy": 0.9}}
    state.record("train", "done", note="x")
    store.write(state)
    again = store.read()
    assert again == state
    assert again.done("train") and not again.done("deploy")
    assert again.history[-1]["event"] == "done" and again.history[-1]["note"] == "x"
    assert again.history[-1]["pid"] == os.getpid()


def test_write_leaves_no_temp_files(tmp_path: Path) -> None:
    work = tmp_path / ".modelcycle"
    store = StateStore(work)
    for index in range(5):
        state = State()
        state.stage("train").outputs = {"i": index}
        store.write(state)
    assert sorted(p.name for p in work.iterdir()) == ["state.json"]
    assert store.read().stages["train"].outputs == {"i": 4}


def test_concurrent_reader_always_sees_a_complete_document(tmp_path: Path) -> None:
    """A writer rewrites the state (of varying size) while this thread reads it: every read parses."""
    store = StateStore(tmp_path / ".modelcycle")
    first = State()
    first.stage("train").outputs = {"i": -1}
    store.write(first)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            index = 0
            while not stop.is_set():
                state = State()
                state.stage("train").outputs = {"i": index, "padding": "x" * (index % 7) * 5000}
                store.write(state)
                index += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    seen: set[int] = set()
    reads = 0
    try:
        while len(seen) < 20 and reads < 200_000:
            text = store.path.read_text()
            document = json.loads(text)  # a torn or truncated write would fail here
            seen.add(document["stages"]["train"]["outputs"]["i"])
            reads += 1
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert not thread.is_alive()
    assert len(seen) >= 20  # the reads overlapped with many rewrites
    assert sorted(p.name for p in store.work_dir.iterdir()) == ["state.json"]


# -- the lock ---------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelcycle.core.state import StateStore

    work = Path(sys.argv[1])
    with StateStore(work).lock("child-training"):
        (work.parent / "held").write_text("held")
        # hold the lock for ~3 s, or until the parent says it is done checking
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline or not (work.parent / "release").exists():
            if time.monotonic() > deadline + 60:
                break
            time.sleep(0.05)
    """
)


def test_lock_serialises_processes(tmp_path: Path) -> None:
    work = tmp_path / ".modelcycle"
    store = StateStore(work)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(work)], stderr=subprocess.PIPE)
    try:
        _wait_for(tmp_path / "held", child)
        with pytest.raises(StateLockedError) as info:
            with store.lock("parent", timeout=0.3):
                pytest.fail("the parent took a lock the child holds")
        message = str(info.value)
        assert re.search(rf"\b{child.pid}\b", message), message
        assert "child-training" in message
        assert str(tmp_path) in message
        assert child.poll() is None  # the child still held the lock when we were refused

        (tmp_path / "release").write_text("go")
        with store.lock("parent", timeout=20):
            # we only get here once the child let go, i.e. it has left its locked block
            assert child.wait(timeout=30) == 0
            holder = json.loads(store.lock_path.read_text())
            assert holder["pid"] == os.getpid()
            assert holder["command"] == "parent"
    finally:
        _stop(child)


def test_lock_is_reentrant_after_release_in_one_process(tmp_path: Path) -> None:
    store = StateStore(tmp_path / ".modelcycle")
    with store.lock("first", timeout=1):
        pass
    with store.lock("second", timeout=1):
        assert json.loads(store.lock_path.read_text())["command"] == "second"


def test_lock_released_when_the_block_raises(tmp_path: Path) -> None:
    store = StateStore(tmp_path / ".modelcycle")
    with pytest.raises(RuntimeError):
        with store.lock("failing", timeout=1):
            raise RuntimeError("boom")
    with store.lock("after", timeout=0.3):
        pass


def test_two_holders_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    """flock is per open file: a second ``lock()`` (another handle) waits even in the same process."""
    store = StateStore(tmp_path / ".modelcycle")
    with store.lock("outer"):
        with pytest.raises(StateLockedError, match="outer"):
            with StateStore(tmp_path / ".modelcycle").lock("inner", timeout=0.2):
                pass


# -- interrupted stages -----------------------------------------------------------------------


def test_running_record_of_a_dead_process_is_interrupted() -> None:
    pid = _dead_pid()
    assert StageRecord(status="running", pid=pid).interrupted() is True


def test_running_record_of_a_live_process_is_not_interrupted() -> None:
    assert StageRecord(status="running", pid=os.getpid()).interrupted() is False


@pytest.mark.parametrize("status", ["pending", "done", "failed"])
def test_only_running_records_can_be_interrupted(status: str) -> None:
    assert StageRecord(status=status, pid=_dead_pid()).interrupted() is False  # type: ignore[arg-type]


def test_running_record_without_pid_is_not_interrupted() -> None:
    assert StageRecord(status="running").interrupted() is False


# -- a damaged state.json ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "it is empty"),
        (b"  \n", "it is empty"),
        (b'{"version": 1, "stages": {"train": {"sta', "it is not valid JSON"),
        (b"\x00\x9f\x92\x96 binary", "it is not UTF-8 text (byte 0x9f at offset 1"),
        (b"[1, 2]", "it is not a modelcycle state"),
        (b'{"stages": {"train": {"status": "finished"}}}', "stages.train.status"),
    ],
)
def test_a_damaged_state_file_is_one_error_naming_it_and_the_repair(tmp_path: Path, content: bytes, problem: str) -> None:
    from modelcycle.core.state import StateDamagedError

    store = StateStore(tmp_path / "uc" / ".modelcycle")
    store.work_dir.mkdir(parents=True)
    store.path.write_bytes(content)
    with pytest.raises(StateDamagedError) as info:
        store.read()
    message = str(info.value)
    assert message.startswith(f"{store.path} is damaged: ") and problem in message
    assert f"modelcycle -C {tmp_path / 'uc'} status --repair" in message
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_backup_moves_the_damaged_file_aside(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.backup() is None
    store.path.write_bytes(b"\xff")
    backup = store.backup()
    assert backup is not None and backup.read_bytes() == b"\xff" and backup.name.startswith("state.json.damaged-")
    assert not store.exists() and store.read() == State()
