"""The endpoint's ASGI app: SageMaker's container contract plus the runtime API path.

Routes: ``GET /ping``, ``POST /invocations``, ``POST /endpoints/{name}/invocations`` (what
boto3's ``sagemaker-runtime`` client calls when pointed at the endpoint's URL) and
``GET /metrics`` (Prometheus text). Client mistakes get a 4xx JSON error and the server keeps
serving. Errors follow SageMaker runtime's shape, so boto3's ``ClientError`` names the reason:
the ``x-amzn-ErrorType`` header carries the error code (``ValidationError`` for a client's
mistake, ``ModelError`` when scoring failed, see :data:`ERROR_TYPES`) and the JSON body a
``message``; the body keeps ``{"error": {"code": 400, "message": "..."}}`` for other clients.

An oversized body gets its 413 for every HTTP/1.1 client, also one that sends the whole body
before reading the answer (Python's ``urllib``): the rest of the body is read and discarded, up
to :data:`DISCARD_FACTOR` times the limit, before the 413 is sent (closing a socket with unread
data makes the kernel reset the connection, and the client sees that instead of the answer).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from modelcycle.core.errors import ServingError
from modelcycle.core.monitoring.records import record_ids
from modelcycle.core.serving.codecs import negotiate_accept
from modelcycle.core.serving.pipeline import InferencePipeline
from modelcycle.platforms.local.routes import with_record_ids

__all__ = ["create_app", "error_response", "ERROR_TYPES", "DISCARD_FACTOR"]

log = logging.getLogger(__name__)


#: ``x-amzn-ErrorType`` per HTTP status (SageMaker runtime's error codes); other 4xx are
#: ``ValidationError``, other 5xx ``InternalFailure``
ERROR_TYPES = {401: "AccessDeniedException", 403: "AccessDeniedException", 500: "ModelError",
               503: "ServiceUnavailable"}
#: an oversized body is read and discarded up to this many times the limit before the 413
DISCARD_FACTOR = 4


def error_response(status: int, message: str, **headers: str) -> JSONResponse:
    """An error answer in SageMaker runtime's shape (``x-amzn-ErrorType`` header, JSON
    ``message``), keeping ``{"error": {"code", "message"}}`` for existing clients."""
    error_type = ERROR_TYPES.get(status, "ValidationError" if status < 500 else "InternalFailure")
    return JSONResponse({"message": message, "error": {"code": status, "message": message}}, status_code=status,
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


class _Batcher:
    """Dynamic batching on the event loop: requests whose inputs are decoded in the same loop
    turn are concatenated into one forward pass (cheaper per image than one pass each), then
    each request gets its own rows back. No threads, no added waiting."""

    def __init__(self, pipeline: InferencePipeline, max_images: int) -> None:
        self.pipeline = pipeline
        self.max_images = max_images
        self.pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.scheduled = False

    async def predict(self, data: np.ndarray) -> np.ndarray:
        if len(data) >= self.max_images:
            return self.pipeline.predict(data)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self.pending.append((data, future))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._run)
        return await future

    def _run(self) -> None:
        self.scheduled = False
        batch, self.pending = self.pending, []
        try:
            inputs = batch[0][0] if len(batch) == 1 else np.concatenate([data for data, _ in batch])
            probabilities = self.pipeline.predict(inputs)
        except Exception as exc:  # a server-side failure: every waiting request learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for data, future in batch:
            if not future.done():
                future.set_result(probabilities[start : start + len(data)])
            start += len(data)


def create_app(
    pipeline: InferencePipeline,
    name: str,
    token: str | None = None,
    max_body_bytes: int = 6 * 1024 * 1024,
    batching: bool = True,
    max_batch_images: int = 256,
    payload_logger: Any = None,
) -> FastAPI:
    """Build the endpoint app around a loaded pipeline.

    Args:
        pipeline: the loaded model and its handlers.
        name: the endpoint name (the runtime path's ``{name}`` must match it).
        token: when set, ``/invocations`` and ``/metrics`` need ``Authorization: Bearer <token>``.
        max_body_bytes: larger requests get 413 (SageMaker's limit is 6 MB).
        batching: batch concurrent requests into one forward pass (see ``_Batcher``).
        max_batch_images: requests this large are predicted on their own.
        payload_logger: a started :class:`~modelcycle.platforms.local.payload.PayloadLogger`;
            every scored request is journaled by it before its 200 is sent (a failed journal
            write answers 503), and ``/feedback`` and ``/payload/flush`` are served.
    """
    app = FastAPI(title=f"modelcycle endpoint {name}", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = _Metrics(name)
    batcher = _Batcher(pipeline, max_batch_images) if batching else None
    expected_token = token.encode() if token else None
    tabular = pipeline.context.tabular  # payload: tabular records are logged as float32 values

    def authorized(request: Request) -> bool:
        if expected_token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected_token)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    discard_limit = DISCARD_FACTOR * max_body_bytes

    async def discard(request: Request, size: int) -> None:
        """Read and drop the rest of an oversized body (up to ``discard_limit`` bytes in all), so
        the 413 reaches a client that writes its whole body before it reads."""
        async for chunk in request.stream():
            size += len(chunk)
            if size > discard_limit:  # beyond the bound: answer now, the connection may reset
                return

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            if int(declared) <= discard_limit:
                await discard(request, 0)
            raise ServingError(f"request body is {int(declared)} bytes; the limit is {max_body_bytes} bytes", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                await discard(request, size)
                raise ServingError(f"request body exceeds the limit of {max_body_bytes} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def score(request: Request) -> Response:
        started = time.perf_counter()
        records = 0
        if not authorized(request):
            response: Response = _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                        **{"WWW-Authenticate": "Bearer"})
        else:
            try:
                accept = negotiate_accept(request.headers.get("accept"))
                body = await read_body(request)
                data = pipeline.decode(body, request.headers.get("content-type", ""))
                probabilities = await batcher.predict(data) if batcher else pipeline.predict(data)
                scoring_id = uuid.uuid4().hex
                payload, content_type = pipeline.encode(probabilities, accept, scoring_id)
                records = len(probabilities)
                if payload_logger is not None:  # durable before the 200; ids: {scoring_id}-{i} for N > 1
                    try:
                        payload_logger.log(scoring_id, data, probabilities, (time.perf_counter() - started) * 1000,
                                           records=tabular)
                    except OSError as exc:
                        log.error("payload journal write failed: %s", exc)
                        raise ServingError(f"payload journal unavailable ({exc}); the request was not logged", 503) from None
                if records > 1 and content_type == "application/json":
                    payload = with_record_ids(payload, record_ids(scoring_id, records))
                response = Response(payload, media_type=content_type, headers={"X-Scoring-Id": scoring_id})
            except ServingError as exc:
                response = _error(exc.status_code, str(exc))
            except Exception:  # a server-side defect, never a client's mistake
                log.exception("scoring failed")
                response = _error(500, "internal error while scoring; see the endpoint log")
        metrics.observe(response.status_code, records, time.perf_counter() - started)
        return response

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

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await score(request)

    @app.post("/endpoints/{endpoint_name}/invocations")
    async def runtime_invocations(endpoint_name: str, request: Request) -> Response:
        if endpoint_name != name:
            return _error(404, f"endpoint '{endpoint_name}' is not served here; this is '{name}'")
        return await score(request)

    if payload_logger is not None:
        from modelcycle.platforms.local.routes import add_monitoring_routes

        add_monitoring_routes(app, payload_logger, pipeline, authorized, _error, read_body)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
