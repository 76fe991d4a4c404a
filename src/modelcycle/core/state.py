"""Persisted lifecycle state: one JSON document per use case, written atomically, guarded by a lock.

Each stage has a status (``pending``, ``running``, ``done``, ``failed``), its outputs and an
event history. A stage left ``running`` by a process that died (its pid is gone) counts as
interrupted, so the next run redoes it. Two processes on one use case are serialised by an
exclusive ``flock`` on ``.modelcycle/lock``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelcycle.core.errors import StateLockedError

__all__ = ["StageRecord", "State", "StateStore", "utcnow"]

Status = Literal["pending", "running", "done", "failed"]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StageRecord(BaseModel):
    status: Status = "pending"
    started_at: str | None = None
    finished_at: str | None = None
    pid: int | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None

    def interrupted(self) -> bool:
        """A ``running`` stage whose process no longer exists."""
        if self.status != "running" or not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class State(BaseModel):
    version: int = 1
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)

    def stage(self, name: str) -> StageRecord:
        return self.stages.setdefault(name, StageRecord())

    def done(self, name: str) -> bool:
        return name in self.stages and self.stages[name].status == "done"

    def record(self, stage: str, event: str, **details: Any) -> None:
        self.history.append({"at": utcnow(), "stage": stage, "event": event, "pid": os.getpid(), **details})


class StateStore:
    """Reads and writes ``<work_dir>/state.json``; ``lock()`` serialises writers."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / "state.json"
        self.lock_path = self.work_dir / "lock"

    def read(self) -> State:
        if not self.path.exists():
            return State()
        return State.model_validate_json(self.path.read_text())

    def write(self, state: State) -> None:
        """Write atomically: a temp file, fsync, then rename over the old state."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "w") as handle:
            handle.write(state.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @contextmanager
    def lock(self, command: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the use case's exclusive lock while the block runs.

        Args:
            command: what this process is doing (shown to a process that waits for it).
            timeout: seconds to wait for another holder; ``None`` waits as long as it takes.

        Raises:
            StateLockedError: the lock stayed held for ``timeout`` seconds; names the holder.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "another process"
                        raise StateLockedError(
                            f"use case in {self.work_dir.parent} is busy: {holder}. Wait for it to "
                            "finish, or stop that process"
                        ) from None
                    time.sleep(0.1)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "command": command, "since": utcnow()}))
            handle.flush()
            yield
        finally:
            handle.close()  # closing releases the flock
