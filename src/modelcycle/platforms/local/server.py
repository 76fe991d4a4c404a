"""The endpoint process: ``python -m modelcycle.platforms.local.server --model-dir DIR ...``.

It binds its socket first (port 0 picks a free one), loads the model, then writes a ready file
``{"pid", "host", "port", "inherited_from"}`` so the deployer learns the port without races. With
``--slot DIR`` it first takes the listening socket of the endpoint serving that slot, if one does
(:mod:`.handoff`: a redeploy keeps the URL and drops no connection), and offers its own once it
answers. The bearer token comes
from ``MODELCYCLE_ENDPOINT_TOKEN`` (never from argv, which other users can read).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import os
import socket
import sys
from pathlib import Path

from modelcycle.platforms.local import handoff

__all__ = ["is_loopback", "main"]

#: Seconds a stopping endpoint that handed its socket over keeps its accepted connections before
#: uvicorn's shutdown closes the idle ones (a request on a fresh connection arrives well within).
_HANDOVER_GRACE_S = 0.5


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve one modelcycle model over HTTP.")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--max-body-mb", type=float, default=6.0)
    parser.add_argument("--slot", type=Path, help="take over (and later offer) the listening socket of this slot")
    payload = parser.add_argument_group("payload logging (store URL from MODELCYCLE_DATABASE_URL)")
    payload.add_argument("--payload-journal", type=Path, help="journal directory; logging is off without it")
    payload.add_argument("--payload-sampling", type=float, default=100.0, metavar="PCT")
    payload.add_argument("--payload-fsync", action="store_true", help="fdatasync the journal per request")
    payload.add_argument("--payload-flush-ms", type=int, default=1000)
    payload.add_argument("--payload-batch", type=int, default=1000)
    payload.add_argument("--payload-drain", choices=("process", "thread"), default="process",
                         help="drain the journal in a child process (default) or a thread")
    args = parser.parse_args(argv)

    token = os.environ.get("MODELCYCLE_ENDPOINT_TOKEN", "").strip() or None  # a blank token is no token
    if not is_loopback(args.host) and not token:
        print(
            f"refusing to bind {args.host}: serving beyond loopback needs a bearer token; set "
            "serving.token in modelcycle.yaml or MODELCYCLE_ENDPOINT_TOKEN",
            file=sys.stderr,
        )
        return 2
    inherited = handoff.take(args.slot, args.host, args.port) if args.slot else None
    sock, inherited_from = inherited if inherited else (_bind(args.host, args.port), None)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]

    import uvicorn

    from modelcycle.platforms.local.app import create_app
    from modelcycle.core.serving.pipeline import load_pipeline

    pipeline = load_pipeline(args.model_dir)
    payload_logger = None
    if args.payload_journal:
        from modelcycle.platforms.local.payload import PayloadLogger

        database_url = os.environ.get("MODELCYCLE_DATABASE_URL")
        if not database_url:
            print("--payload-journal needs the store URL in MODELCYCLE_DATABASE_URL", file=sys.stderr)
            return 2
        payload_logger = PayloadLogger(
            args.payload_journal, database_url, args.name, pipeline.manifest.run_id,
            sampling_percentage=args.payload_sampling, fsync=args.payload_fsync,
            flush_interval=args.payload_flush_ms / 1000, batch_records=args.payload_batch, drain=args.payload_drain,
        ).start()  # replays what a previous process journaled but did not store
    app = create_app(pipeline, args.name, token=token, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                     payload_logger=payload_logger)
    # Everything allocated so far (the model, the libraries) lives as long as the process: keep it
    # out of the cyclic collector's full passes, whose pauses would land on requests' latency.
    gc.collect()
    gc.freeze()
    options: dict[str, object] = {"access_log": False, "log_level": "warning", "timeout_keep_alive": 30}
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:
        pass
    server = uvicorn.Server(uvicorn.Config(app, **options))  # type: ignore[arg-type]
    offer = handoff.SocketOffer(args.slot, sock) if args.slot else None

    if args.ready_file:
        original_startup = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await original_startup(sockets=sockets)
            if offer is not None:
                offer.publish()
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "host": args.host, "port": port,
                                       "inherited_from": inherited_from}))
            os.replace(tmp, args.ready_file)

        server.startup = startup  # type: ignore[method-assign]
    if payload_logger is not None or offer is not None:  # a graceful stop drains the journal into
        original_shutdown = server.shutdown  # the store (uvicorn re-raises SIGTERM after serve(),
                                             # so not in a finally)

        async def shutdown(sockets: list[socket.socket] | None = None) -> None:
            if offer is not None:
                # A successor may share the listener: stop accepting, then give the connections
                # just accepted time to send their request (uvicorn's shutdown would close them
                # as idle, resetting the client).
                offer.close()
                for listener in server.servers:
                    listener.close()
                await asyncio.sleep(_HANDOVER_GRACE_S)
            await original_shutdown(sockets=sockets)
            if payload_logger is not None:
                payload_logger.close()

        server.shutdown = shutdown  # type: ignore[method-assign]
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
