"""Training attempts: which run a ``train`` works on, which process, with which configuration —
and how the next ``train`` finds an interrupted run to resume.

Each run's directory holds ``attempt.json`` (written atomically), updated when an attempt
starts (``running``, with its pid) and ends (``finished``, ``failed`` or ``interrupted``). An
attempt left ``running`` by a process that no longer exists was killed. The next ``train``
resumes the newest run whose last attempt did not finish, provided it was started with the same
training configuration (:func:`fingerprint`); ``restart`` (``train --restart``) abandons it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelcycle.core.checkpoints import CHECKPOINT_DIR, CheckpointError, CheckpointStore, atomic_write_json, read_json

__all__ = ["ATTEMPT_FILE", "Attempt", "Plan", "fingerprint", "latest", "plan", "pid_alive"]

#: the attempt record in a run's directory
ATTEMPT_FILE = "attempt.json"
#: statuses of an attempt that did not finish (the run can be resumed)
UNFINISHED = ("running", "failed", "interrupted")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (another user's process counts as alive; a zombie, dead but
    not yet reaped by its parent, does not)."""
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def fingerprint(config: Any) -> str:
    """What makes two trainings the same run: framework, hyperparameters, model and data options,
    and the number of training processes (a resumed run must continue the same schedule)."""
    document = {
        "framework": config.framework,
        "hyperparameters": config.hyperparameters.model_dump(mode="json"),
        "model": config.model,
        "data": config.data.model_dump(mode="json"),
        "instances": config.training.instance_count,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Attempt:
    """The last attempt at training one run (``<run dir>/attempt.json``)."""

    run_id: str
    fingerprint: str
    epochs: int
    pid: int = field(default_factory=os.getpid)
    status: str = "running"
    attempt: int = 1
    started_at: str = field(default_factory=_now)
    ended_at: str | None = None

    def killed(self) -> bool:
        """Left ``running`` by a process that no longer exists."""
        return self.status == "running" and not pid_alive(self.pid)

    def unfinished(self) -> bool:
        """Did not finish and no live process works on it: a run ``train`` may resume."""
        return self.killed() or self.status in ("failed", "interrupted")

    def describe(self) -> str:
        return "was killed" if self.killed() else "failed" if self.status == "failed" else "was interrupted"

    def write(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / ATTEMPT_FILE, asdict(self))


def read(run_dir: Path) -> Attempt | None:
    """The run's attempt record (``None``: none, e.g. a run trained before attempts existed)."""
    path = Path(run_dir) / ATTEMPT_FILE
    if not path.exists():
        return None
    try:
        document = read_json(path, "the training attempt record")
        return Attempt(**{k: v for k, v in document.items() if k in Attempt.__dataclass_fields__})
    except (CheckpointError, TypeError):
        return None  # a damaged record is not resumable; the run is simply not continued


def latest(runs_dir: Path) -> Attempt | None:
    """The newest attempt record under ``runs_dir`` (by start time)."""
    found = [a for d in Path(runs_dir).glob("*/") if (a := read(d)) is not None] if Path(runs_dir).is_dir() else []
    return max(found, key=lambda a: a.started_at, default=None)


def last_complete_epoch(run_dir: Path) -> int:
    """The epoch of the run's last complete checkpoint (0: none, or unreadable)."""
    try:
        checkpoint = CheckpointStore(Path(run_dir) / CHECKPOINT_DIR).latest()
    except CheckpointError:
        return 0
    return checkpoint.epoch if checkpoint else 0


@dataclass
class Plan:
    """What a ``train`` does: a new run, or the resumption of an interrupted one.

    ``resumed``: the interrupted attempt continued (same run id, same MLflow run);
    ``abandoned``: the run ids of unfinished runs left behind (their MLflow runs end KILLED).
    """

    runs_dir: Path
    run_id: str
    fingerprint: str
    epochs: int
    resumed: Attempt | None = None
    abandoned: list[str] = field(default_factory=list)
    attempt: Attempt | None = None

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.run_id

    def begin(self) -> Attempt:
        """Record this process's attempt as ``running``."""
        number = self.resumed.attempt + 1 if self.resumed else 1
        self.attempt = Attempt(run_id=self.run_id, fingerprint=self.fingerprint, epochs=self.epochs, attempt=number)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.attempt.write(self.run_dir)
        return self.attempt

    def end(self, status: str) -> None:
        """Record how the attempt ended (an MLflow status: FINISHED, FAILED, KILLED); a finished
        run's checkpoints are removed (the packaged model supersedes them)."""
        if self.attempt is None:
            return
        self.attempt.status = {"FINISHED": "finished", "KILLED": "interrupted"}.get(status, "failed")
        self.attempt.ended_at = _now()
        self.attempt.write(self.run_dir)
        if status == "FINISHED":
            CheckpointStore(self.run_dir / CHECKPOINT_DIR).remove()


def plan(runs_dir: Path, config: Any, restart: bool = False) -> Plan:
    """Decide what ``train`` does, telling the user (stderr) when it resumes or abandons a run.

    Resumes the newest run when its last attempt did not finish and used the same training
    configuration, unless ``restart``; otherwise starts a new run.
    """
    runs_dir = Path(runs_dir)
    wanted = fingerprint(config)
    epochs = int(config.hyperparameters.epochs)
    newest = latest(runs_dir)
    if newest is None or not newest.unfinished():
        return Plan(runs_dir, uuid.uuid4().hex, wanted, epochs)
    done = last_complete_epoch(runs_dir / newest.run_id)
    if not restart and newest.fingerprint == wanted:
        print(f"note: run {newest.run_id} {newest.describe()} (attempt {newest.attempt}, last complete epoch "
              f"{done} of {newest.epochs}); resuming it. 'modelcycle train --restart' starts over instead",
              file=sys.stderr, flush=True)
        return Plan(runs_dir, newest.run_id, wanted, epochs, resumed=newest)
    reason = "--restart" if restart else "the training configuration changed"
    print(f"note: run {newest.run_id} {newest.describe()} after epoch {done} of {newest.epochs}; "
          f"starting a new run ({reason}), the old one is abandoned", file=sys.stderr, flush=True)
    newest.status = "abandoned"
    newest.ended_at = newest.ended_at or _now()
    newest.write(runs_dir / newest.run_id)
    return Plan(runs_dir, uuid.uuid4().hex, wanted, epochs, abandoned=[newest.run_id])
