"""Payload logging inside the endpoint process: journal first, then the SQL store in batches.

:class:`PayloadLogger` is what the endpoint calls for every scored request. ``log()`` appends one
frame to the journal (see :mod:`.journal`) with a single ``os.write`` before the response is sent
— no fsync, no database round trip on the request path. A drainer moves the journal into the
store every ``flush_interval`` seconds, or sooner once ``batch_records`` records are waiting,
and first replays whatever a previous process left past the stored offset. Replays are
idempotent (``scoring_id`` is the payload table's primary key), so no answered request is lost
and none is stored twice.

The drainer is a child process by default (:mod:`.drainer`: it keeps parsing and inserting off
the serving process's GIL), restarted with a back-off when it dies (:mod:`.supervisor`); while
none runs, :meth:`PayloadLogger.health` says ``Degraded`` and why. ``drain="thread"`` runs the
drain as a thread of this process instead.

Durability: against the endpoint process dying (crash, SIGKILL, OOM kill) — the frame is in the
kernel's page cache before the 200 leaves. Against power loss or a kernel crash only with
``fsync: true`` (one ``fdatasync`` per request; slower).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelcycle.core.monitoring.errors import MonitoringError
from modelcycle.platforms.local.drainer import STATUS_FILE, retry_delay
from modelcycle.platforms.local.supervisor import DrainerSupervisor
from modelcycle.platforms.local.journal import (
    JournalDrainer,
    JournalWriter,
    encode_frame,
    lock_journal,
    record_ids,
    sampled,
    segment_numbers,
)

__all__ = ["PayloadLogger", "endpoint_payload_settings", "journal_path"]

log = logging.getLogger(__name__)


def journal_path(endpoints_dir: Path, name: str) -> Path:
    """Where the endpoint ``name`` keeps its payload journal."""
    return Path(endpoints_dir) / f"{name}.journal"


def endpoint_payload_settings(work_dir: Path, name: str, monitoring: Any = None) -> dict[str, Any] | None:
    """The payload-logging options a deployer passes to the local endpoint, or None when off.

    ``monitoring`` is the use case's ``MonitoringConfig``; when not given it is read from the use
    case's ``modelcycle.yaml`` (plus ``MODELCYCLE_*`` environment overrides) beside ``work_dir``,
    with the defaults when there is none.
    """
    from modelcycle.core.monitoring.store import resolve_database_url

    if monitoring is None:
        monitoring = _monitoring_config(Path(work_dir))
    payload = monitoring.payload
    if not payload.enabled:
        return None
    return {
        "journal": str(journal_path(Path(work_dir) / "endpoints", name)),
        "database_url": resolve_database_url(monitoring.database_url, Path(work_dir)),
        "sampling_percentage": payload.sampling_percentage,
        "fsync": payload.fsync,
        "flush_interval_ms": payload.flush_interval_ms,
        "batch_records": payload.batch_records,
    }


def _monitoring_config(work_dir: Path) -> Any:
    from modelcycle.core.config import CONFIG_FILE, MonitoringConfig, load_config

    if (work_dir.parent / CONFIG_FILE).is_file():
        return load_config(work_dir.parent).monitoring
    return MonitoringConfig()


class PayloadLogger:
    """Journal + background drain for one endpoint.

    Args:
        journal: the endpoint's journal directory (created; locked while the logger runs).
        database_url: the monitoring store the drain writes into.
        deployment_id: the endpoint name, stored with every record.
        asset_revision: the model's run id.
        sampling_percentage: share of requests logged, decided per request from its scoring id.
        fsync: fdatasync the journal after every request (power-loss durability; slower).
        flush_interval: seconds between drains.
        batch_records: drain sooner once this many records wait.
        drain: ``"process"`` (a child drainer process) or ``"thread"`` (a thread of this process).
        lock_timeout: seconds to wait for another process holding the journal.
        min_free_bytes: the journal's file system needs this much free space for ``/ping`` to
            answer 200 (see :meth:`health`).
    """

    def __init__(
        self, journal: str | os.PathLike[str], database_url: str, deployment_id: str, asset_revision: str | None = None,
        sampling_percentage: float = 100.0, fsync: bool = False, flush_interval: float = 1.0,
        batch_records: int = 1000, drain: Literal["process", "thread"] = "process", segment_bytes: int = 64 << 20,
        lock_timeout: float = 30.0, min_free_bytes: int = 16 << 20,
    ) -> None:
        self.directory = Path(journal)
        self.database_url = database_url
        self.deployment_id, self.asset_revision = deployment_id, asset_revision
        self.sampling_percentage = sampling_percentage
        self.flush_interval, self.batch_records = flush_interval, batch_records
        self.mode = drain
        self.lock_timeout = lock_timeout
        self.writer = JournalWriter(self.directory, deployment_id, asset_revision, segment_bytes, fsync)
        self.store: Any = None
        self.drainer: JournalDrainer | None = None
        self.min_free_bytes = min_free_bytes
        self.supervisor: DrainerSupervisor | None = None
        self._lock_fd: int | None = None
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiting = 0
        self.logged_records = 0
        self.last_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> PayloadLogger:
        """Lock the journal, open a fresh segment and start draining (old segments first).

        The store need not be reachable: requests are journaled meanwhile and the drain retries.
        """
        self._lock_fd = lock_journal(self.directory, self.lock_timeout)
        if self._lock_fd is None:
            raise MonitoringError(
                f"payload journal {self.directory} is held by another process (an endpoint or its drainer "
                "still finishing; see its lock file)")
        try:
            self.writer.open()
            if self.mode == "process":
                self.supervisor = DrainerSupervisor(self.directory, self.database_url, self._lock_fd,
                                                    self.flush_interval).start()
                return self
        except BaseException:
            self.writer.close()
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        try:
            self._open_store()
        except MonitoringError as exc:  # serve anyway: the journal keeps every record
            self.last_error = str(exc)
            log.error("payload store unavailable at start; records stay journaled until it is back: %s", exc)
        self._thread = threading.Thread(target=self._run, name="payload-drain", daemon=True)
        self._thread.start()
        if self.last_error is None:  # replay what a previous process left, right away (an
            self._wake.set()  # unreachable store is tried again after flush_interval)
        return self

    @property
    def process(self) -> Any:
        """The running (or last) drainer process; None in thread mode."""
        return self.supervisor.process if self.supervisor is not None else None

    def close(self, timeout: float = 30.0) -> None:
        """Stop writing, drain everything into the store, release the journal (idempotent)."""
        if self._lock_fd is None:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.writer.close()
        try:
            if self.supervisor is not None:
                if not self.supervisor.stop(timeout):  # it died: store the rest from here
                    log.warning("the payload drainer did not finish; draining the journal in the endpoint")
                    with self._drain_lock:
                        self._open_store().drain()
            else:
                with self._drain_lock:
                    self._open_store().drain()
        except Exception:  # the journal keeps the records; the next start replays them
            log.exception("final payload drain failed; the journal keeps the records for the next start")
        finally:
            if self.drainer is not None:
                self.drainer.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- request path --------------------------------------------------------------------------
    def log(self, scoring_id: str, inputs: np.ndarray, probabilities: np.ndarray, latency_ms: float, force: bool = False,
            tabular: bool = False) -> list[str] | None:
        """Journal one request's records; returns their scoring ids, or None when not sampled.

        ``inputs`` are the decoded raw pixels ``(N, C, H, W)`` (0-255, stored as uint8), or
        with ``tabular`` the tabular records ``(N, F)`` (stored as float32, exactly).

        Raises:
            OSError: the journal write failed; the request must not be answered 200.
        """
        if not force and not sampled(scoring_id, self.sampling_percentage):
            return None
        if tabular:
            pixels = inputs.reshape(len(inputs), -1)
        else:
            pixels = inputs if inputs.dtype == np.uint8 else np.rint(inputs).astype(np.uint8)
            if pixels.ndim != 4:  # a plugin's input_fn gave another layout: keep the values, flat
                pixels = pixels.reshape(len(pixels), 1, 1, -1)
        self.writer.append(encode_frame(scoring_id, time.time(), latency_ms, pixels, probabilities))
        n = len(pixels)
        self.logged_records += n
        self._waiting += n
        if self._waiting >= self.batch_records:
            self._waiting = 0
            if self.supervisor is not None:
                self.supervisor.wake()
            else:
                self._wake.set()
        return record_ids(scoring_id, n)

    # -- draining ------------------------------------------------------------------------------
    def _open_store(self) -> JournalDrainer:
        if self.drainer is None:
            self.open_store()
            self.drainer = JournalDrainer(self.directory, self.store, self.writer)
        return self.drainer

    def open_store(self) -> Any:
        """The monitoring store this logger drains into (connected on first use).

        Raises:
            MonitoringError: the store cannot be reached.
        """
        if self.store is None:
            from modelcycle.core.monitoring.store import MonitoringStore, mask_url

            try:
                self.store = MonitoringStore(self.database_url)
            except MonitoringError:
                raise
            except Exception as exc:
                raise MonitoringError(f"payload store {mask_url(self.database_url)} unavailable: {exc}") from exc
        return self.store

    def flush(self, timeout: float = 60.0) -> int:
        """Drain now: every record journaled before the call is in the store when it returns.
        Returns the records the drain inserted meanwhile.

        Raises:
            MonitoringError: the store could not take the records (they stay journaled), or the
                drainer process is gone.
        """
        if self._lock_fd is None:
            raise MonitoringError("payload logger is not started")
        if self.supervisor is None:
            with self._drain_lock:
                drainer = self._open_store()
                try:
                    return drainer.drain()
                except MonitoringError:
                    raise
                except Exception as exc:
                    raise MonitoringError(f"payload store {self.store.masked_url} unavailable: {exc}") from exc
        return self._flush_process(timeout)

    def _drainer_status(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _flush_process(self, timeout: float) -> int:
        """Wake the drainer and wait until its status reports the current segment stored up to
        the position written before the call (and no older segment is left). The drainer writes
        its status only after the store committed, so its record count is final on return. A
        drainer that died meanwhile is waited for: the supervisor restarts it, and the new one
        starts with a drain."""
        assert self.supervisor is not None
        seq, position, journal_id = self.writer.current_seq, self.writer.position, self.writer.current_journal_id
        header_size = self.writer.header_size
        asked = time.time()
        before = int(self._drainer_status().get("records", 0))
        deadline = time.monotonic() + timeout
        self.supervisor.wake()
        woken = self.supervisor.pid
        while True:
            down = self.supervisor.down()
            if down is None and self.supervisor.pid != woken:  # a restarted drainer: it drains at start,
                woken = self.supervisor.pid  # and a wake-up is harmless
                self.supervisor.wake()
            status = self._drainer_status()
            older = [n for n in segment_numbers(self.directory) if seq is not None and n < seq]
            if not older and (position <= header_size or status.get("offsets", {}).get(journal_id, 0) >= position):
                break
            if status.get("last_error") and status.get("time", 0) >= asked:
                raise MonitoringError(status["last_error"])
            if time.monotonic() > deadline:
                if down is not None:
                    raise MonitoringError(
                        f"{down}; the records stay journaled and are stored once it runs again. If it keeps "
                        "exiting, see the endpoint's log for why, then restart the endpoint "
                        "('modelcycle deploy --force')")
                raise MonitoringError(f"the payload drainer did not catch up within {timeout:.0f} s")
            time.sleep(0.01)
        return max(0, int(status.get("records", 0)) - before)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(retry_delay(self.flush_interval, failures))
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
                failures, self.last_error = 0, None
            except Exception as exc:  # keep serving: the journal holds the records until the store is back
                failures += 1
                self.last_error = str(exc)
                if failures == 1 or failures % 50 == 0:
                    log.error("payload drain failed (%d in a row); records stay journaled: %s", failures, exc)

    def status(self) -> dict[str, Any]:
        drained = self.drainer.records if self.drainer is not None else self._drainer_status().get("records", 0)
        last_error = self.last_error if self.process is None else self._drainer_status().get("last_error")
        state, reason = self.health()
        return {
            "state": state,
            "reason": reason,
            "deployment_id": self.deployment_id,
            "journal": str(self.directory),
            "drain": self.mode,
            "drainer_pid": self.process.pid if self.process is not None else None,
            "sampling_percentage": self.sampling_percentage,
            "logged_records": self.logged_records,
            "drained_records": drained,
            "last_error": last_error,
            "drainer_restarts": self.supervisor.restarts if self.supervisor is not None else 0,
        }

    def health(self) -> tuple[str, str | None]:
        """``("InService", None)``; ``("Degraded", why)`` while records wait because no drainer
        runs (requests are still answered and journaled); ``("Unhealthy", why)`` when the journal
        cannot take records (closed, its file system nearly full, or its last write failed) —
        ``/ping`` answers 503 then, so traffic goes elsewhere."""
        problem = self.writer.problem(self.min_free_bytes)
        if problem is not None:
            return "Unhealthy", problem
        down = self.supervisor.down() if self.supervisor is not None else None
        if down is not None:
            return "Degraded", f"{down}; scored records wait in the payload journal {self.directory}"
        return "InService", None
