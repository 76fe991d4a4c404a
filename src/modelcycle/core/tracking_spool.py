"""The spool between a training process and its detached MLflow writer.

A training process never imports MLflow: it appends JSON records (one per line, flushed per
record) to ``<spool dir>/<key>.jsonl`` and starts one detached writer
(``python -m modelcycle.core.tracking_writer <spool dir>``, new session, output appended to
``<spool dir>/writer.log``), which applies the records in order and then removes the spool.

Files of a spool directory (``.modelcycle/tracking/`` of a use case):

* ``<key>.jsonl`` — the records; only complete lines (ending ``\\n``) are applied.
* ``<key>.state.json`` — written by the writer only (atomically): ``applied`` (the byte offset
  of the records applied, the replay cursor), ``mlflow_run_id``, ``experiment_id``, ``error``.
* ``writer.lock`` — held (``flock``) by the one writer working on the directory: a free lock
  with spools left means no writer runs (it died, or gave up on an unreachable store).
* ``writer.log`` — what the writers printed.

Readers of the MLflow store call :func:`wait_for_spools` first.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "SpoolFile", "LOCK_NAME", "LOG_NAME", "pending_spools", "read_state", "write_state", "writer_running",
    "start_writer", "wait_for_spools", "writer_lock", "now_ms",
]

LOCK_NAME = "writer.lock"
LOG_NAME = "writer.log"
SUFFIX = ".jsonl"
STATE_SUFFIX = ".state.json"


def now_ms() -> int:
    """The wall clock in epoch milliseconds (MLflow's unit)."""
    return int(time.time() * 1000)


class SpoolFile:
    """The training side of one spool: append-only JSON records, each flushed when written.

    Args:
        directory: the spool directory (created if missing).
        key: the spool's name (unique per training attempt).
    """

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = Path(directory)
        self.key = key
        self.path = self.directory / f"{key}{SUFFIX}"
        self._file: TextIO | None = None

    def append(self, op: str, **fields: Any) -> None:
        """Append the record ``{"op": op, "ts": <now ms>, **fields}`` and flush it to the OS."""
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        record = {"op": op, "ts": now_ms(), **fields}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def state_path(self) -> Path:
        return state_path(self.path)


def state_path(spool: Path) -> Path:
    return spool.with_name(spool.name[: -len(SUFFIX)] + STATE_SUFFIX)


def pending_spools(directory: Path) -> list[Path]:
    """The spools of ``directory`` not yet applied completely, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.name.endswith(SUFFIX)]
    return sorted(found, key=lambda p: (_started(p), p.name))


def _started(path: Path) -> float:
    """A spool's key ends in its start time (``<run id>.<ms>``); fall back to the file's ctime."""
    suffix = path.name[: -len(SUFFIX)].rsplit(".", 1)[-1]
    if suffix.isdigit():
        return float(suffix)
    try:
        return path.stat().st_ctime * 1000
    except OSError:
        return 0.0


def read_state(spool: Path) -> dict[str, Any]:
    """The writer's state of ``spool`` (``{}`` before the writer wrote any)."""
    try:
        return dict(json.loads(state_path(spool).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def write_state(spool: Path, state: dict[str, Any]) -> None:
    """Replace the state of ``spool`` atomically."""
    target = state_path(spool)
    scratch = target.with_name(f".{target.name}.{os.getpid()}")
    scratch.write_text(json.dumps(state), encoding="utf-8")
    os.replace(scratch, target)


@contextmanager
def writer_lock(directory: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold the directory's writer lock; yields whether it was acquired (always with ``blocking``)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    with (Path(directory) / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def writer_running(directory: Path) -> bool:
    """Whether a writer holds ``directory``'s lock now."""
    with writer_lock(directory, blocking=False) as acquired:
        return not acquired


def start_writer(directory: Path) -> subprocess.Popen[bytes]:
    """Start a detached writer for ``directory`` (new session; output appended to ``writer.log``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOG_NAME).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "modelcycle.core.tracking_writer", str(directory)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_for_spools(directory: Path, timeout: float = 300.0) -> list[str]:
    """Block until every record spooled in ``directory`` when called is applied (bounded by
    ``timeout`` seconds). With no writer running, one is started to replay what is left (the
    previous one died, or the store was unreachable). Returns warnings, one per spool not applied:
    they name the store, the writer's log and the spool, which is kept for the next replay."""
    directory = Path(directory)
    targets = {spool: spool.stat().st_size for spool in pending_spools(directory) if spool.exists()}
    if not targets:
        return []
    deadline = time.monotonic() + timeout
    started: subprocess.Popen[bytes] | None = None
    while True:
        for spool, size in list(targets.items()):
            if not spool.exists() or read_state(spool).get("applied", 0) >= size:
                del targets[spool]
        if not targets:
            return []
        if not (started is not None and started.poll() is None) and not writer_running(directory):
            if started is None:
                started = start_writer(directory)
            else:  # the writer we started gave up on these
                return [_not_applied(spool, "the writer stopped before applying it") for spool in targets]
        if time.monotonic() > deadline:
            return [_not_applied(spool, f"not applied within {timeout:.0f} s") for spool in targets]
        time.sleep(0.05)


def _not_applied(spool: Path, fallback: str) -> str:
    state = read_state(spool)
    uri = state.get("uri") or _first_record(spool).get("uri", "?")
    return (f"tracking: the run spooled in {spool} is not in the MLflow store at {uri}: "
            f"{state.get('error') or fallback} (writer log: {spool.parent / LOG_NAME}); "
            "the spool is kept and replayed by the next command that reads runs")


def _first_record(spool: Path) -> dict[str, Any]:
    try:
        with spool.open(encoding="utf-8") as handle:
            return dict(json.loads(handle.readline()))
    except (OSError, ValueError):
        return {}
