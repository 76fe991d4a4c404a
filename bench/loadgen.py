"""A cheap HTTP/1.1 keep-alive POST load generator for loopback servers.

The client shares the machine's cores with the server under test, so it does as little as it
can: one asyncio task per keep-alive connection over raw streams, the request bytes encoded
once, responses parsed only as far as status line, headers and the Content-Length (or chunked)
body; uvloop when it is importable. The run is bounded by a fixed request count and a hard
overall timeout, and only loopback hosts are accepted.

    python bench/loadgen.py --port 8000 --path /invocations --body-file body.json -c 8 -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

try:
    import uvloop

    _loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
except ImportError:  # plain asyncio still works, at a higher client cost
    _loop_factory = None


@dataclass
class LoadResult:
    """Outcome of one timed run (warm-up excluded); latencies in milliseconds."""

    concurrency: int
    requests: int  # timed requests completed (with or without error)
    errors: int  # exceptions, connection losses and statuses >= 400
    seconds: float
    throughput: float  # successful (non-error) requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    timed_out: bool = False

    def __str__(self) -> str:
        return (f"c={self.concurrency} n={self.requests} errors={self.errors} {self.seconds:.2f}s "
                f"{self.throughput:.0f} req/s p50={self.p50_ms:.2f}ms p90={self.p90_ms:.2f}ms "
                f"p99={self.p99_ms:.2f}ms statuses={self.statuses}" + (" TIMED OUT" if self.timed_out else ""))


def check_loopback(host: str) -> None:
    """Raise ValueError unless ``host`` is localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"loadgen only targets loopback hosts, not {host!r}")


def build_request(host: str, port: int, path: str, body: bytes, content_type: str, headers: dict[str, str] | None) -> bytes:
    """Encode the full keep-alive POST request once."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return ``(status, keep_alive)``. The body is read and discarded."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        length = int(lower[i + 17 : lower.index(b"\r\n", i + 2)])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, b"\r\nconnection: close" not in lower


async def _run(host: str, port: int, request: bytes, concurrency: int, requests: int, warmup: int,
               timeout: float) -> LoadResult:
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    warm = [warmup // concurrency + (i < warmup % concurrency) for i in range(concurrency)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    barrier = asyncio.Barrier(concurrency + 1)
    perf = time.perf_counter

    async def worker(n_warm: int, n_timed: int) -> None:
        nonlocal errors
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for phase, count in ((0, n_warm), (1, n_timed)):
                if phase == 1:
                    await barrier.wait()
                for _ in range(count):
                    t0 = perf()
                    try:
                        if conn is None:
                            conn = await asyncio.open_connection(host, port)
                        reader, writer = conn
                        writer.write(request)
                        status, keep = await _read_response(reader)
                    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                        status, keep = -1, False
                    if phase:
                        latencies.append(perf() - t0)
                        statuses[status] = statuses.get(status, 0) + 1
                        errors += status < 0 or status >= 400
                    if not keep and conn is not None:
                        conn[1].close()
                        conn = None
        finally:
            if conn is not None:
                conn[1].close()

    tasks = [asyncio.ensure_future(worker(w, s)) for w, s in zip(warm, shares)]
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        await asyncio.wait_for(barrier.wait(), timeout)  # all connections warmed up
    except (asyncio.TimeoutError, asyncio.BrokenBarrierError):
        timed_out = True
    t_start = perf()
    if not timed_out:
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        timed_out = bool(pending)
    seconds = perf() - t_start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] * 1000 if lat else float("nan")

    done = len(lat)
    return LoadResult(concurrency, done, errors, seconds, (done - errors) / seconds if seconds > 0 else 0.0,
                      pct(0.50), pct(0.90), pct(0.99), dict(sorted(statuses.items())), timed_out)


def run_load(host: str, port: int, path: str, body: bytes, *, content_type: str = "application/json",
             headers: dict[str, str] | None = None, concurrency: int = 8, requests: int = 2000,
             warmup: int = 200, timeout: float = 120.0) -> LoadResult:
    """Send ``warmup`` then ``requests`` POSTs over ``concurrency`` keep-alive connections.

    The requests are split evenly across the connections, each sending its next request once
    the previous response is read. Only the timed phase is reported; after ``timeout`` seconds
    the run stops and reports what completed (``timed_out=True``). Must not be called from a
    running event loop.
    """
    check_loopback(host)
    if concurrency < 1 or requests < concurrency:
        raise ValueError("need concurrency >= 1 and requests >= concurrency")
    request = build_request(host, port, path, body, content_type, headers)
    coro = _run(host, port, request, concurrency, requests, warmup, timeout)
    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: run once and print the result (``--json`` for machine-readable)."""
    ap = argparse.ArgumentParser(description="HTTP/1.1 keep-alive POST load generator (loopback only)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/invocations")
    ap.add_argument("--body-file", required=True)
    ap.add_argument("--content-type", default="application/json")
    ap.add_argument("-H", "--header", action="append", default=[], help="extra header 'Name: value'")
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("-n", "--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()
    headers = dict(h.split(":", 1) for h in args.header)
    result = run_load(args.host, args.port, args.path, body, content_type=args.content_type,
                      headers={k.strip(): v.strip() for k, v in headers.items()},
                      concurrency=args.concurrency, requests=args.requests, warmup=args.warmup,
                      timeout=args.timeout)
    print(json.dumps(asdict(result)) if args.json else result)


if __name__ == "__main__":
    main()
