"""Keeps an endpoint's payload drainer process (:mod:`.drainer`) running.

:class:`DrainerSupervisor` starts the drainer, watches it from a thread of the endpoint process
and, when it dies (a crash, an OOM kill, a SIGKILL), starts a new one after a back-off: 0.5 s,
then doubling up to 30 s while it keeps dying, back to 0.5 s once one has stayed up for 30 s.
Nothing is lost meanwhile: the endpoint keeps journaling, and the new drainer continues from the
offsets stored with the records (each batch and its offset commit together, so a drainer killed
mid-batch stores that batch again or not at all — and ``scoring_id`` keys make a replay a no-op).

While no drainer runs, :meth:`DrainerSupervisor.down` says why and when the next start is due;
the endpoint reports itself ``Degraded`` with that reason.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["DrainerSupervisor", "describe_exit"]

log = logging.getLogger(__name__)


def describe_exit(code: int | None) -> str:
    """``"killed by SIGKILL"``, ``"exited with code 1"``, ... for a Popen ``returncode``."""
    if code is None:
        return "is running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class DrainerSupervisor:
    """Runs ``python -m modelcycle.platforms.local.drainer`` for one journal and restarts it.

    Args:
        journal: the journal directory the drainer empties.
        database_url: the store it writes into (passed through the environment, never argv).
        lock_fd: the endpoint's journal lock; every drainer inherits it (a new endpoint on the
            same journal waits until the last drainer is done).
        interval: the drainer's ``--interval-ms`` in seconds.
        backoff: seconds before the first restart; doubled per death in a row up to ``max_backoff``.
        stable_after: a drainer up this long resets the back-off.
        poll: seconds between liveness checks.
    """

    def __init__(self, journal: Path, database_url: str, lock_fd: int, interval: float, backoff: float = 0.5,
                 max_backoff: float = 30.0, stable_after: float = 30.0, poll: float = 0.1) -> None:
        self.journal, self.database_url, self.lock_fd, self.interval = Path(journal), database_url, lock_fd, interval
        self.backoff, self.max_backoff, self.stable_after, self.poll = backoff, max_backoff, stable_after, poll
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0  #: drainers started after the first one
        self.last_exit: int | None = None  #: returncode of the last drainer that died
        self._died_at: float | None = None  # wall clock, when the running drainer was found dead
        self._restart_at: float | None = None  # monotonic, when the next start is due
        self._deaths_in_a_row = 0
        self._started_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> DrainerSupervisor:
        """Start the drainer and the thread that restarts it.

        Raises:
            OSError: the first drainer could not be started.
        """
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="payload-drainer-supervisor", daemon=True)
        self._thread.start()
        return self

    def _records_so_far(self) -> int:
        """What the dead drainer reported storing (a restart continues the count)."""
        from modelcycle.platforms.local.drainer import STATUS_FILE

        try:
            return int(json.loads((self.journal / STATUS_FILE).read_text()).get("records", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return 0

    def _spawn(self, records_base: int = 0) -> None:
        env = {**os.environ, "MODELCYCLE_DATABASE_URL": self.database_url}
        command = [
            sys.executable, "-m", "modelcycle.platforms.local.drainer", "--journal", str(self.journal),
            "--parent", str(os.getpid()), "--interval-ms", str(max(1, int(self.interval * 1000))),
            "--records-base", str(records_base),
        ]
        # The child inherits the signal mask of this thread: SIGUSR1 blocked from its first
        # instruction, so a wake-up sent before it installed its own mask stays pending instead
        # of killing it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, pass_fds=(self.lock_fd,))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._started_at = time.monotonic()
        self._died_at = self._restart_at = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            process = self.process
            if process is not None and process.poll() is None:
                if self._deaths_in_a_row and time.monotonic() - self._started_at >= self.stable_after:
                    self._deaths_in_a_row = 0
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                if self._restart_at is None:  # newly found dead (or its restart failed)
                    self.last_exit = process.returncode if process is not None else None
                    self._deaths_in_a_row += 1
                    delay = min(self.max_backoff, self.backoff * 2 ** min(self._deaths_in_a_row - 1, 30))
                    self._died_at = self._died_at or time.time()
                    self._restart_at = time.monotonic() + delay
                    log.error("payload drainer %s; restarting it in %.1f s (records wait in the journal)",
                              describe_exit(self.last_exit), delay)
                if time.monotonic() < self._restart_at:
                    continue
                try:
                    self._spawn(self._records_so_far())
                except OSError as exc:
                    self._restart_at = None  # counted as another death: a longer back-off
                    log.error("payload drainer could not be restarted: %s", exc)
                    continue
                self.restarts += 1
                log.warning("payload drainer restarted (pid %d, restart %d)", self.process.pid, self.restarts)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop restarting, then let the drainer store what is left and exit (SIGTERM; SIGKILL
        after ``timeout``). Returns True when it finished cleanly (exit code 0)."""
        self._stop.set()
        with self._lock:  # no start is in progress past this point
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        process = self.process
        if process is None:
            return False
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # drain what is left, then exit
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("payload drainer %d did not finish in %.0f s; killed (the journal keeps the rest)",
                          process.pid, timeout)
                process.kill()
                process.wait()
        return process.returncode == 0

    # -- state ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        """True while a drainer process is alive."""
        process = self.process
        return process is not None and process.poll() is None

    def wake(self) -> None:
        """Ask the running drainer to drain now (SIGUSR1); nothing when none runs."""
        process = self.process
        if process is not None and process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def down(self) -> str | None:
        """Why no drainer runs and when the next one starts, or None while one runs."""
        if self.running():
            return None
        process = self.process
        code = process.returncode if process is not None else None
        if self._stop.is_set():
            return f"the payload drainer {describe_exit(code)} and the endpoint is stopping"
        since = f" {time.time() - self._died_at:.1f} s ago" if self._died_at else ""
        restart_at = self._restart_at
        due = (f"restart {self.restarts + 1} in {max(0.0, restart_at - time.monotonic()):.1f} s" if restart_at
               else f"restart {self.restarts + 1} pending")
        return f"the payload drainer {describe_exit(code)}{since}; {due}"
