"""The endpoint's ASGI app: SageMaker's container contract plus the runtime API path.

Routes: ``GET /ping``, ``POST /invocations``, ``POST /endpoints/{name}/invocations`` (what
boto3's ``sagemaker-runtime`` client calls when pointed at the endpoint's URL) and
``GET /metrics`` (Prometheus text); with payload logging, ``/feedback`` and ``/payload/flush``.
The two scoring routes are served by plain ASGI (:mod:`.scoring`, the hot path); the others by
FastAPI. Client mistakes get a 4xx JSON error and the server keeps serving. Errors follow
SageMaker runtime's shape, so boto3's ``ClientError`` names the reason: the ``x-amzn-ErrorType``
header carries the error code (``ValidationError`` for a client's mistake, ``ModelError`` when
scoring failed, see :data:`~.scoring.ERROR_TYPES`) and the JSON body a ``message``; the body
keeps ``{"error": {"code": 400, "message": "..."}}`` for other clients. An oversized body gets
its 413 for every HTTP/1.1 client (see :func:`.scoring.read_body`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelcycle.core.serving.pipeline import InferencePipeline
from modelcycle.core.errors import ServingError
from modelcycle.platforms.local.scoring import ClientGone, ScoringApp, error_body, read_body

__all__ = ["create_app", "error_response"]

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **headers: str) -> Response:
    """An error answer in SageMaker runtime's shape (``x-amzn-ErrorType`` header, JSON
    ``message``), keeping ``{"error": {"code", "message"}}`` for existing clients."""
    body, error_type = error_body(status, message)
    return Response(body, status_code=status, media_type="application/json",
                    headers={"x-amzn-ErrorType": error_type, **headers})


_error = error_response


class _Metrics:
    def __init__(self, endpoint: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelcycle_requests", "Scoring requests by HTTP status", ["endpoint", "code"], registry=self.registry
        )
        self.records = Counter("modelcycle_records", "Records scored", ["endpoint"], registry=self.registry)
        self.latency = Histogram(
            "modelcycle_request_seconds",
            "Scoring request latency (server side)",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
        )
        self.endpoint = endpoint
        self._records = self.records.labels(endpoint)
        self._latency = self.latency.labels(endpoint)
        self._codes: dict[int, Any] = {}

    def observe(self, code: int, records: int, seconds: float) -> None:
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = self.requests.labels(self.endpoint, str(code))
        counter.inc()
        if records:
            self._records.inc(records)
        self._latency.observe(seconds)


def create_app(
    pipeline: InferencePipeline,
    name: str,
    token: str | None = None,
    max_body_bytes: int = 6 * 1024 * 1024,
    batching: bool = True,
    max_batch_images: int = 256,
    payload_logger: Any = None,
) -> ScoringApp:
    """Build the endpoint app around a loaded pipeline.

    Args:
        pipeline: the loaded model and its handlers.
        name: the endpoint name (the runtime path's ``{name}`` must match it).
        token: when set, scoring, ``/metrics`` and the monitoring routes need
            ``Authorization: Bearer <token>``.
        max_body_bytes: larger requests get 413 (SageMaker's limit is 6 MB).
        batching: batch concurrent requests into one forward pass (see :class:`~.scoring.Batcher`).
        max_batch_images: requests this large are predicted on their own.
        payload_logger: a started :class:`~modelcycle.platforms.local.payload.PayloadLogger`;
            every scored request is journaled by it before its 200 is sent (a failed journal
            write answers 503), and ``/feedback`` and ``/payload/flush`` are served.
    """
    app = FastAPI(title=f"modelcycle endpoint {name}", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = _Metrics(name)
    scoring = ScoringApp(app, pipeline, name, token=token, max_body_bytes=max_body_bytes, batching=batching,
                         max_batch_records=max_batch_images, payload_logger=payload_logger, observe=metrics.observe)

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization")
        return scoring.authorized(header.encode("latin-1") if header is not None else None)

    async def read_request_body(request: Request) -> bytes:
        try:
            return await read_body(request.receive, request.headers.get("content-length"), max_body_bytes)
        except ClientGone:  # nobody is left to answer; the route answers into the void
            raise ServingError("the client disconnected before sending its body", 400) from None

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/ping")
    async def ping() -> Response:
        """200 while requests can be answered *and* journaled: an empty body when all is well,
        ``{"status": "Degraded", "reason": ...}`` while the payload drainer is down (records
        wait in the journal); 503 with the reason when the journal cannot take records."""
        if payload_logger is None:
            return Response(b"", status_code=200)
        state, reason = payload_logger.health()
        if state == "InService":
            return Response(b"", status_code=200)
        if state == "Degraded":
            return JSONResponse({"status": state, "reason": reason}, status_code=200)
        return _error(503, f"cannot log payload: {reason}")

    if payload_logger is not None:
        from modelcycle.platforms.local.routes import add_monitoring_routes

        add_monitoring_routes(app, payload_logger, pipeline, authorized, _error, read_request_body)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return scoring
