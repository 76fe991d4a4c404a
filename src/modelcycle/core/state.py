"""Persisted lifecycle state: one JSON document per use case, written atomically, guarded by a lock.

Each stage has a status (``pending``, ``running``, ``done``, ``failed``), its outputs and an
event history. A stage left ``running`` by a process that died (its pid is gone) counts as
interrupted, so the next run redoes it. Two processes on one use case are serialised by an
exclusive ``flock`` on ``.modelcycle/lock``.

A damaged ``state.json`` (empty, truncated, not UTF-8, not JSON, not the state's schema) is
reported as one :class:`StateDamagedError` naming the file and the repair command
(``modelcycle status --repair``, which rebuilds it from the runs and endpoints on disk).
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

from pydantic import BaseModel, Field, ValidationError

from modelcycle.core.errors import ModelcycleError, StateLockedError
from modelcycle.core.textfiles import decode_utf8

__all__ = ["StageRecord", "State", "StateStore", "StateDamagedError", "utcnow"]

Status = Literal["pending", "running", "done", "failed"]


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StateDamagedError(ModelcycleError):
    """``state.json`` cannot be read as a lifecycle state; the message names the file, what is
    wrong and the repair command. ``path`` is the damaged file."""

    def __init__(self, path: Path, problem: str) -> None:
        use_case = Path(path).parent.parent
        super().__init__(
            f"{path} is damaged: {problem}. modelcycle cannot tell what is trained or deployed; run "
            f"'modelcycle -C {use_case} status --repair' to rebuild it from the runs and the live endpoint "
            "on disk (the damaged file is kept as a backup beside it)"
        )
        self.path = Path(path)
        self.problem = problem


class _Undecodable(Exception):
    pass


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
        """The persisted state; an empty :class:`State` when there is no ``state.json``.

        Raises:
            StateDamagedError: the file exists but is unreadable, empty, not UTF-8, not JSON or
                not a state (names the file and ``modelcycle status --repair``).
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateDamagedError(self.path, f"it cannot be read ({exc.strerror or exc})") from None
        return self._parse(data)

    def _parse(self, data: bytes) -> State:
        if not data.strip():
            raise StateDamagedError(self.path, "it is empty")
        try:
            text = decode_utf8(data, self.path, _Undecodable, "")
        except _Undecodable as exc:
            raise StateDamagedError(self.path, "it is " + str(exc).removeprefix(f"{self.path} is ").rstrip(": ")) from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateDamagedError(
                self.path, f"it is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; truncated?)"
            ) from None
        try:
            return State.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the document"
            raise StateDamagedError(self.path, f"it is not a modelcycle state ({where}: {first['msg']})") from None

    def exists(self) -> bool:
        """Whether ``state.json`` is there (readable or not)."""
        return self.path.exists()

    def backup(self) -> Path | None:
        """Move ``state.json`` aside as ``state.json.damaged-<UTC time>``; returns the backup's
        path (``None`` when there is no file). Call it under :meth:`lock`."""
        if not self.path.exists():
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        os.replace(self.path, target)
        return target

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
        handle = open(self.lock_path, "a+", errors="replace")  # a damaged holder note still reads
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
