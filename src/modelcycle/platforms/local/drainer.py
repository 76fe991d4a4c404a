"""The endpoint's payload drainer, a child process: journal → store, in batches.

    MODELCYCLE_DATABASE_URL=... python -m modelcycle.platforms.local.drainer --journal DIR --parent PID

Why a process and not a thread of the endpoint: parsing and inserting records holds the GIL and
pollutes the caches of the thread that serves requests. On the seed ConvNet endpoint (one image
per request, concurrency 8, 21 interleaved rounds, ``bench/bench_monitoring.py``) a drain thread
cost 9.6 % of the throughput (p99 14.6 → 20.5 ms); this child process 0.3 % (p99 → 16.0 ms).
The endpoint itself only appends to the journal (~6 µs per request). The drainer runs at nice 10,
so when the CPUs are saturated the serving process goes first and the drain catches up in the
gaps (the journal holds the backlog; ``/payload/flush`` still waits for it).

The loop waits up to ``--interval-ms`` or until the endpoint sends ``SIGUSR1`` (a batch is ready,
or a client asked for ``/payload/flush``), then drains every complete frame written so far
(``JournalDrainer(follow=True)``: the newest segment is the endpoint's). ``SIGTERM`` (graceful
stop, after the endpoint closed its journal) or the endpoint's death (the parent pid changes)
make it drain everything that is left, a torn last frame excepted, and exit. It inherits the
journal's lock, so a new endpoint on the same journal waits until it is done.

After every pass it writes ``drainer.json`` into the journal (``pid``, ``records`` inserted so
far by this endpoint's drainers, ``offsets`` stored per open segment, ``last_error``, ``time``), which the endpoint reads to
report a store outage and to know when a flush is done (written only after the store committed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "STATUS_FILE", "retry_delay"]

STATUS_FILE = "drainer.json"
log = logging.getLogger("modelcycle.payload.drainer")


def retry_delay(interval: float, failures: int, cap: float = 5.0) -> float:
    """Seconds until the next drain after ``failures`` failed drains in a row (0: none).

    Doubles from ``interval`` up to ``cap`` but is never shorter than ``interval``: a drain is
    attempted at most once per ``flush_interval`` unless the endpoint asks for one (a batch is
    ready, or a flush). A shorter retry broke that promise for long intervals: with
    ``flush_interval: 60`` a store that was down at start was tried again after 5 s, in the
    middle of whatever the operator was doing to the store.
    """
    if failures <= 0:
        return interval
    return max(interval, min(cap, interval * 2 ** min(failures, 30)))


def _write_status(directory: Path, status: dict[str, Any]) -> None:
    tmp = directory / f".{STATUS_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, directory / STATUS_FILE)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the endpoint dies (PR_SET_PDEATHSIG); elsewhere the loop
    notices the new parent pid within a second."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Drain an endpoint's payload journal into the monitoring store.")
    parser.add_argument("--journal", required=True, type=Path)
    parser.add_argument("--parent", type=int, required=True, help="the endpoint's pid; its death ends the drainer")
    parser.add_argument("--interval-ms", type=int, default=200)
    parser.add_argument("--records-base", type=int, default=0,
                        help="records a previous drainer of this endpoint stored (a restart continues its count)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s payload-drainer %(levelname)s %(message)s")
    url = os.environ.get("MODELCYCLE_DATABASE_URL")
    if not url:
        print("the drainer needs the store URL in MODELCYCLE_DATABASE_URL", file=sys.stderr)
        return 2
    wanted = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)  # taken with sigtimedwait, never interrupting a drain
    _die_with_parent()
    try:  # background work: under CPU contention the serving process goes first, the drain catches up
        os.nice(10)
    except OSError:
        pass

    from modelcycle.core.monitoring.errors import MonitoringError
    from modelcycle.platforms.local.journal import JournalDrainer
    from modelcycle.core.monitoring.store import MonitoringStore, mask_url

    directory: Path = args.journal
    drainer: JournalDrainer | None = None
    status: dict[str, Any] = {"pid": os.getpid(), "records": args.records_base, "offsets": {}, "last_error": None, "time": time.time()}
    failures = 0

    def drain(final: bool) -> None:
        nonlocal drainer, failures
        try:
            if drainer is None:
                drainer = JournalDrainer(directory, MonitoringStore(url), follow=True)
            drainer.follow = not final
            drainer.drain()
            failures, status["last_error"] = 0, None
        except Exception as exc:  # the journal keeps the records; retry later
            failures += 1
            message = exc if isinstance(exc, MonitoringError) else f"{type(exc).__name__}: {exc}"
            status["last_error"] = f"payload store {mask_url(url)} unavailable: {message}"
            if failures == 1 or failures % 50 == 0:
                log.error("drain failed (%d in a row); records stay journaled: %s", failures, message)
        if drainer is not None:
            status["records"], status["offsets"] = args.records_base + drainer.records, drainer.offsets
        status["time"] = time.time()
        _write_status(directory, status)

    interval = args.interval_ms / 1000
    next_drain = 0.0  # replay what a previous process left, right away
    while True:
        wait = max(0.0, next_drain - time.monotonic())
        received = signal.sigtimedwait(wanted, min(wait, 1.0)) if wait > 0 else None
        parent_gone = os.getppid() != args.parent
        if parent_gone or (received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT)):
            drain(final=True)
            if status["last_error"] and not parent_gone and received is not None:
                log.error("final drain failed; the journal keeps the records for the next start")
            return 0
        if received is None and time.monotonic() < next_drain:
            continue  # a one-second check of the parent, not a drain yet
        drain(final=False)
        next_drain = time.monotonic() + retry_delay(interval, failures)


if __name__ == "__main__":
    sys.exit(main())
