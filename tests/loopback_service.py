"""A threaded JSON HTTP service on 127.0.0.1: the scaffolding of the stand-ins for cloud services
the tests cannot reach (IBM AI Factsheets, Watson OpenScale).

A subclass answers ``answer(method, raw_path, body, headers) -> (status, document, headers)``;
``body`` is the parsed JSON, else the decoded text, else None. ``start()`` / ``stop()`` (or a
``with`` block) run and stop the server; it never listens beyond loopback.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackJSONService:
    """Base of the loopback stand-ins; ``name`` names the server thread."""

    name = "loopback-service"

    def __init__(self) -> None:
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def answer(self, method: str, raw_path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self.server is not None, "the service is not started"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Any:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                status, document, extra = service.answer(self.command, self.path, body, dict(self.headers))
                data = b"" if document is None else json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            if self.thread is not None:
                self.thread.join(10)
            self.server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def missing_property(document: Any, *keys: str, where: str = "") -> str | None:
    """The first required property ``document`` lacks (absent or empty), as the services word it
    (``where.key: missing required property``); ``None`` when all are there."""
    prefix = f"{where}." if where else ""
    if not isinstance(document, dict):
        return f"{where or 'request body'}: an object is required"
    for key in keys:
        if document.get(key) in (None, "", [], {}):
            return f"{prefix}{key}: missing required property"
    return None
