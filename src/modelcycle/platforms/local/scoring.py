"""The endpoint's scoring path as plain ASGI: ``POST /invocations`` and
``POST /endpoints/{name}/invocations`` without a web framework's routing in between.

Scoring is the one hot path of an endpoint, so it skips FastAPI's routing, dependency solving
and response classes (about a fifth of a one-image request's server time); every other route
(``/ping``, ``/metrics``, ``/feedback``, ``/payload/flush``) is the FastAPI app's, which
:class:`ScoringApp` wraps. The contract is unchanged: the same bodies, status codes, headers and
error shape as :func:`error_body` (SageMaker runtime's ``x-amzn-ErrorType`` header and JSON
``message``).

Concurrent requests are scored together (:class:`Batcher`), and a request's body is read
straight from the ASGI ``receive`` channel with the size limit applied (:func:`read_body`,
also used by the FastAPI routes).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

import numpy as np
import orjson

from modelcycle.core.errors import ServingError
from modelcycle.core.monitoring.records import record_ids
from modelcycle.core.serving.codecs import negotiate_accept

__all__ = ["Batcher", "ClientGone", "ScoringApp", "error_body", "read_body", "ERROR_TYPES", "DISCARD_FACTOR"]

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: ``x-amzn-ErrorType`` per HTTP status (SageMaker runtime's error codes); other 4xx are
#: ``ValidationError``, other 5xx ``InternalFailure``
ERROR_TYPES = {401: "AccessDeniedException", 403: "AccessDeniedException", 500: "ModelError",
               503: "ServiceUnavailable"}
#: an oversized body is read and discarded up to this many times the limit before the 413
DISCARD_FACTOR = 4


def error_body(status: int, message: str) -> tuple[bytes, str]:
    """The JSON body and ``x-amzn-ErrorType`` of an error answer: ``{"message": ..., "error":
    {"code": status, "message": ...}}`` (``message`` for boto3, ``error`` for earlier clients)."""
    error_type = ERROR_TYPES.get(status, "ValidationError" if status < 500 else "InternalFailure")
    return orjson.dumps({"message": message, "error": {"code": status, "message": message}}), error_type


class ClientGone(Exception):
    """The client disconnected before its request body arrived; nothing can be answered."""


async def read_body(receive: Receive, declared: str | None, max_bytes: int) -> bytes:
    """The request body from an ASGI ``receive`` channel, at most ``max_bytes``.

    An oversized body gets its 413 for every HTTP/1.1 client, also one that sends the whole body
    before reading the answer (Python's ``urllib``): the rest of the body is read and discarded,
    up to :data:`DISCARD_FACTOR` times the limit, before the error is raised (closing a socket
    with unread data makes the kernel reset the connection, and the client sees that instead of
    the answer).

    Raises:
        ServingError: 413 for a body (declared or sent) over ``max_bytes``.
        ClientGone: the client disconnected first.
    """
    discard_limit = DISCARD_FACTOR * max_bytes

    async def discard(size: int, more: bool) -> None:
        while more and size <= discard_limit:  # beyond the bound: answer now, the connection may reset
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False) and message["type"] == "http.request"

    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        if int(declared) <= discard_limit:
            await discard(0, True)
        raise ServingError(f"request body is {int(declared)} bytes; the limit is {max_bytes} bytes", 413)
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > max_bytes:
            await discard(size, more)
            raise ServingError(f"request body exceeds the limit of {max_bytes} bytes", 413)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Batcher:
    """Dynamic batching on the event loop: requests whose inputs are decoded in the same loop
    turn are concatenated into one forward pass (cheaper per record than one pass each), then
    each request gets its own rows back. No threads, no added waiting; requests of
    ``max_records`` or more records are predicted on their own."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_records: int) -> None:
        self._predict = predict
        self.max_records = max_records
        self.pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.scheduled = False

    async def predict(self, data: np.ndarray) -> np.ndarray:
        if len(data) >= self.max_records:
            return self._predict(data)
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
            probabilities = self._predict(inputs)
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


class ScoringApp:
    """ASGI app: scores ``POST /invocations`` and ``POST /endpoints/{name}/invocations`` itself
    and hands every other request to ``fallback`` (the FastAPI app).

    Args:
        fallback: the ASGI app serving every other route.
        pipeline: the loaded model's :class:`~modelcycle.core.serving.pipeline.InferencePipeline`,
            or for a script-mode model its
            :class:`~modelcycle.core.serving.script_pipeline.ScriptPipeline` (the user's handlers
            answer, one request at a time; the response body is theirs, unchanged).
        name: the endpoint's name (the runtime path's ``{name}`` must match it, else 404).
        token: when set, requests need ``Authorization: Bearer <token>`` (401 otherwise).
        max_body_bytes: larger bodies get 413.
        batching: score concurrent requests in one forward pass (:class:`Batcher`).
        max_batch_records: requests this large are predicted on their own.
        payload_logger: when given, every scored request is journaled before its 200 is sent
            (a failed journal write answers 503).
        observe: called with ``(status, records, seconds)`` after every scoring request.
    """

    def __init__(
        self, fallback: Any, pipeline: Any, name: str, *, token: str | None, max_body_bytes: int,
        batching: bool = True, max_batch_records: int = 256, payload_logger: Any = None,
        observe: Callable[[int, int, float], None] = lambda status, records, seconds: None,
    ) -> None:
        self.fallback = fallback
        self.pipeline = pipeline
        self.name = name
        self._runtime_path = f"/endpoints/{name}/invocations"
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self._script = hasattr(pipeline, "score")  # a script-mode model: the user's handlers answer
        batching = batching and getattr(pipeline, "batchable", True)
        self._predict = Batcher(pipeline.predict, max_batch_records).predict if batching else None
        self.payload_logger = payload_logger
        self._tabular = bool(pipeline.context.tabular)  # tabular records are journaled as float32 values
        self.observe = observe

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/invocations" or path == self._runtime_path:
                if scope["method"] == "POST":
                    await self._score(scope, receive, send)
                else:
                    await self._answer_error(send, 405, "Method Not Allowed", [(b"allow", b"POST")])
                return
            if path.startswith("/endpoints/") and path.endswith("/invocations") and path.count("/") == 3:
                name = path[len("/endpoints/"):-len("/invocations")]
                await self._answer_error(send, 404, f"endpoint '{name}' is not served here; this is '{self.name}'")
                return
        await self.fallback(scope, receive, send)

    def authorized(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries the endpoint's bearer token."""
        if self._token is None:
            return True
        scheme, _, given = (authorization or b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)

    async def _score(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        records = 0
        if not self.authorized(headers.get(b"authorization")):
            status = await self._answer_error(send, 401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                              [(b"www-authenticate", b"Bearer")])
            self.observe(status, 0, time.perf_counter() - started)
            return
        try:
            accept = _text(headers.get(b"accept"))
            accept = accept if self._script else negotiate_accept(accept)  # the user's output_fn negotiates
            declared = headers.get(b"content-length")
            body = await read_body(receive, declared.decode("latin-1") if declared else None, self.max_body_bytes)
            tabular = self._tabular
            if self._script:
                scored = self.pipeline.score(body, _text(headers.get(b"content-type")), accept)
                data, probabilities, tabular = scored.inputs, scored.probabilities, scored.tabular
                scoring_id = uuid.uuid4().hex
                payload, content_type, records = scored.body, scored.content_type, scored.records
            else:
                data = self.pipeline.decode(body, _text(headers.get(b"content-type")))
                probabilities = await self._predict(data) if self._predict else self.pipeline.predict(data)
                scoring_id = uuid.uuid4().hex
                payload, content_type = self.pipeline.encode(probabilities, accept, scoring_id)
                records = len(probabilities)
            if self.payload_logger is not None and data is not None:  # durable before the 200; ids: {scoring_id}-{i}
                try:
                    self.payload_logger.log(scoring_id, data, probabilities, (time.perf_counter() - started) * 1000,
                                            tabular=tabular)
                except OSError as exc:
                    log.error("payload journal write failed: %s", exc)
                    raise ServingError(f"payload journal unavailable ({exc}); the request was not logged", 503) from None
            if records > 1 and content_type == "application/json" and not self._script:
                from modelcycle.platforms.local.routes import with_record_ids

                payload = with_record_ids(payload, record_ids(scoring_id, records))
            await _answer(send, 200, payload, content_type.encode("latin-1"), [(b"x-scoring-id", scoring_id.encode())])
            status = 200
        except ClientGone:
            return
        except ServingError as exc:
            status = await self._answer_error(send, exc.status_code, str(exc))
        except Exception:  # a server-side defect, never a client's mistake
            request_id = uuid.uuid4().hex
            log.exception("scoring failed (request id %s)", request_id)
            status = await self._answer_error(
                send, 500, f"internal error while scoring (request id {request_id}); see the endpoint log")
        self.observe(status, records, time.perf_counter() - started)

    @staticmethod
    async def _answer_error(send: Send, status: int, message: str,
                            extra: list[tuple[bytes, bytes]] | None = None) -> int:
        body, error_type = error_body(status, message)
        await _answer(send, status, body, b"application/json",
                      [(b"x-amzn-errortype", error_type.encode()), *(extra or [])])
        return status


def _text(value: bytes | None) -> str:
    return value.decode("latin-1") if value else ""


async def _answer(send: Send, status: int, body: bytes, content_type: bytes,
                  extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
