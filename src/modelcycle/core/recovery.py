"""Rebuilding a use case's state from what is on disk, and finding its endpoints without it.

``state.json`` is the record of what is trained and deployed; when it is damaged or deleted the
facts are still on disk:

- every finished training run leaves ``.modelcycle/runs/<run_id>/model/modelcycle.json`` (the
  manifest, written last) beside the model files it records by SHA-256;
- every local endpoint leaves ``.modelcycle/endpoints/<name>.ready.json`` (``{"pid", "host",
  "port"}``, written by the server once it listens) beside ``<name>.log`` and, with payload
  logging, its ``<name>.journal`` directory. The local platform's ``describe_endpoint`` tells
  whether that pid still runs the endpoint (it guards against pid reuse).

:func:`rebuild_state` turns these into a state (train done for the newest verified run, deploy
done for a live endpoint serving a verified run); :func:`stop_endpoints_on_disk` lets ``cleanup``
stop endpoints the state no longer knows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.artifacts import ARCHIVE_NAME, MANIFEST_NAME, Manifest, verify_model
from modelcycle.core.errors import ModelcycleError
from modelcycle.core.state import State, StateDamagedError, utcnow
from modelcycle.core.textfiles import read_utf8

if TYPE_CHECKING:  # pragma: no cover - typing only
    from modelcycle.core.view import UseCaseView

__all__ = ["TrainedRun", "trained_runs", "endpoints_on_disk", "stop_endpoints_on_disk", "rebuild_state", "recovery_hint"]

#: The platform whose endpoints leave ready files under ``.modelcycle/endpoints``.
LOCAL_PLATFORM = "local"
READY_SUFFIX = ".ready.json"


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run found on disk whose model passed :func:`verify_model`."""

    run_id: str
    model_dir: Path
    manifest: Manifest

    @property
    def archive(self) -> Path | None:
        archive = self.model_dir.parent / ARCHIVE_NAME
        return archive if archive.is_file() else None

    def outputs(self) -> dict[str, Any]:
        """The ``train`` stage's outputs as far as the disk tells them (no history, duration or
        MLflow run id: those lived only in the lost state)."""
        return {
            "run_id": self.run_id,
            "metrics": dict(self.manifest.metrics),
            "history": [],
            "model_dir": str(self.model_dir),
            "archive": str(self.archive) if self.archive else None,
            "framework": self.manifest.framework,
            "recovered": True,
        }


def _manifests(work_dir: Path) -> list[Path]:
    runs = Path(work_dir) / "runs"
    return sorted(runs.glob(f"*/model/{MANIFEST_NAME}")) if runs.is_dir() else []


def trained_runs(work_dir: Path) -> tuple[list[TrainedRun], list[str]]:
    """Every finished run under ``work_dir/runs`` whose model verifies, newest first (by the
    manifest's ``created_at``, then its file time), and a note for each run skipped and why."""
    found: list[tuple[str, float, TrainedRun]] = []
    notes = []
    for path in _manifests(work_dir):
        model_dir = path.parent
        try:
            manifest = verify_model(model_dir)
        except ModelcycleError as exc:
            notes.append(f"run {model_dir.parent.name} skipped: {exc}")
            continue
        found.append((manifest.created_at, path.stat().st_mtime, TrainedRun(manifest.run_id, model_dir, manifest)))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [run for _, _, run in found], notes


def _ready_record(ready: Path) -> dict[str, Any]:
    info = json.loads(read_utf8(ready, ValueError, "the ready file is damaged"))
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or not isinstance(info.get("port"), int):
        raise ValueError(f"{ready} does not hold a pid and a port")
    host = str(info.get("host") or "127.0.0.1")
    stem = ready.name[: -len(READY_SUFFIX)]  # <endpoint name> or <endpoint name>.<process instance>
    name = re.sub(r"\.[0-9a-f]{8}$", "", stem)
    url_host = f"[{host}]" if ":" in host else host
    log = ready.with_name(f"{stem}.log")
    return {
        "name": name, "platform": LOCAL_PLATFORM, "url": f"http://{url_host}:{info['port']}", "host": host,
        "port": info["port"], "pid": info["pid"], "ready_file": str(ready), "log": str(log) if log.is_file() else None,
        "started_at": datetime.fromtimestamp(ready.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
    }


def endpoints_on_disk(work_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Endpoint records rebuilt from the ready files under ``work_dir/endpoints``, newest first
    (their status unknown: ask the platform), and a note for each unreadable ready file."""
    directory = Path(work_dir) / "endpoints"
    readies = sorted(directory.glob(f"*{READY_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True) if directory.is_dir() else []
    records, notes = [], []
    for ready in readies:
        try:
            records.append(_ready_record(ready))
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            notes.append(f"ready file {ready} skipped: {exc}")
    return records, notes


def stop_endpoints_on_disk(use_case: UseCaseView) -> int:
    """Stop every endpoint of the use case that has a ready file (its process, when it still
    runs, and the ready file); returns how many were removed. For ``cleanup`` without a state."""
    records, _ = endpoints_on_disk(use_case.work_dir)
    if not records:
        return 0
    use_case.registry.load_platform(LOCAL_PLATFORM, "serving")
    return sum(int(use_case.registry.call_platform(LOCAL_PLATFORM, "delete_endpoint", endpoint=r)) for r in records)


def _serving_run(name: str, runs: list[TrainedRun]) -> TrainedRun | None:
    """The run an endpoint named ``<use case>-<run id[:8]>`` serves."""
    tokens = set(name.split("-"))
    return next((run for run in runs if run.run_id[:8] in tokens), None)


def _deploy_outputs(use_case: UseCaseView, record: dict[str, Any], run: TrainedRun) -> dict[str, Any]:
    journal = use_case.work_dir / "endpoints" / f"{record['name']}.journal"
    return {
        **record, "status": "InService", "model_dir": str(run.model_dir), "run_id": run.run_id,
        "auth": bool(use_case.config.endpoint_token()), "payload_logging": journal.is_dir(),
        "payload_journal": str(journal) if journal.is_dir() else None, "recovered": True,
    }


def rebuild_state(use_case: UseCaseView) -> dict[str, Any]:
    """Rebuild a missing or damaged ``state.json`` from disk; leave a readable one alone.

    The damaged file is moved aside (``state.json.damaged-<time>``). The new state has ``train``
    done for the newest run whose model verifies and ``deploy`` done for the newest live endpoint
    that serves one of those runs; ``govern`` and ``monitor`` start over. Call under the use
    case's lock.

    Returns:
        ``{"repaired", "problem", "backup", "train", "deploy", "notes"}``: whether a state was
        written, what was wrong, the backup's path, the recovered run id and endpoint name, and
        what was skipped and why.
    """
    store = use_case.store
    problem = None if store.exists() else f"{store.path} is missing"
    if problem is None:
        try:
            store.read()
        except StateDamagedError as exc:
            problem = f"{exc.path} is damaged: {exc.problem}"
        else:
            return {"repaired": False, "problem": None, "backup": None, "train": None, "deploy": None,
                    "notes": [f"{store.path} is readable: nothing to repair"]}
    runs, notes = trained_runs(use_case.work_dir)
    state = State()
    train = deploy = None
    if runs:
        train = runs[0]
        record = state.stage("train")
        record.status, record.outputs = "done", train.outputs()
        record.started_at = record.finished_at = train.manifest.created_at
    else:
        notes.append(f"no finished run with a verified model under {use_case.work_dir / 'runs'}: train again")
    endpoints, skipped = endpoints_on_disk(use_case.work_dir)
    notes += skipped
    for candidate in endpoints:
        if deploy is not None or not runs:
            break
        status = use_case.describe_endpoint(candidate).get("status")
        serving = _serving_run(candidate["name"], runs)
        if status != "InService":
            notes.append(f"endpoint {candidate['name']} is not live ({status}); not recorded")
        elif serving is None:
            notes.append(f"endpoint {candidate['name']} is live but serves no verified run; stop it with 'modelcycle cleanup'")
        else:
            deploy = candidate["name"]
            record = state.stage("deploy")
            record.status, record.outputs = "done", _deploy_outputs(use_case, candidate, serving)
            record.started_at, record.finished_at = candidate["started_at"], utcnow()
    backup = store.backup()
    state.record("repair", "done", problem=problem, backup=str(backup) if backup else None, train=train.run_id if train else None,
                 deploy=deploy)
    store.write(state)
    return {"repaired": True, "problem": problem, "backup": str(backup) if backup else None,
            "train": train.run_id if train else None, "deploy": deploy, "notes": notes}


def recovery_hint(use_case: UseCaseView) -> str | None:
    """What to do when ``state.json`` is missing while a trained model is on disk, else ``None``
    (a cheap look: manifests are not verified here, ``repair`` does that)."""
    if use_case.store.exists():
        return None
    manifests = _manifests(use_case.work_dir)
    if not manifests:
        return None
    return (
        f"{use_case.store.path} is missing but {len(manifests)} trained run(s) are on disk under "
        f"{use_case.work_dir / 'runs'}: run 'modelcycle -C {use_case.directory} status --repair' to recover "
        "the trained (and a live deployed) model"
    )
