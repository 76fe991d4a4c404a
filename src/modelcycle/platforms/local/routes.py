"""Monitoring routes of the endpoint (added when it runs with a payload logger).

``POST /feedback`` attaches ground truth to scored records. Bodies (JSON):

* ``{"scoring_id": "...", "label": 3}`` or a list of such objects;
* OpenScale's ``{"fields": ["scoring_id", "label"], "values": [["...", 3], ...]}``;
* inline records, ``{"fields": ["scoring_input", "label"], "values": [[<pixels>, 3], ...]}``:
  the endpoint scores each input, logs it as payload (whatever the sampling) and stores the
  label with the new scoring id. A tabular model's ``scoring_input`` is one record: its values
  in the model's field order (numeric codes, or categories as text) or an object naming them.

Answers ``200 {"stored": n, "scoring_ids": [...]}``; ``404`` naming the scoring ids that are not
in this endpoint's payload log (nothing is stored then); ``400`` for a malformed body or a label
outside ``0..K-1``.

``POST /payload/flush`` drains the journal into the store now and answers
``{"drained": n, ...status}`` — clients use it to wait for their records (``503`` when the
store is unreachable: the records stay journaled).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from modelcycle.core.errors import ServingError
from modelcycle.core.monitoring.errors import MonitoringError, UnknownScoringIdError

__all__ = ["add_monitoring_routes", "parse_feedback", "with_record_ids"]


def with_record_ids(body: bytes, ids: list[str]) -> bytes:
    """Add ``"scoring_ids": [...]`` to an encoded JSON object response."""
    stripped = body.rstrip()
    if not stripped.endswith(b"}") or len(stripped) < 2:
        return body
    separator = b"," if stripped[:-1].rstrip() != b"{" else b""
    return stripped[:-1] + separator + b'"scoring_ids":' + orjson.dumps(ids) + b"}"


def _label(value: Any, classes: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ServingError(f"{where}: label must be an integer class index, got {value!r}", 400)
    if not 0 <= int(value) < classes:
        raise ServingError(f"{where}: label {int(value)} is outside 0..{classes - 1}", 400)
    return int(value)


def parse_feedback(document: Any, classes: int) -> tuple[dict[str, int], list[tuple[Any, int]]]:
    """Split a feedback body into ``({scoring_id: label}, [(inline input, label), ...])``.

    Raises:
        ServingError: 400 naming what is wrong.
    """
    by_id: dict[str, int] = {}
    inline: list[tuple[Any, int]] = []
    if isinstance(document, dict) and "fields" in document:
        fields, values = document.get("fields"), document.get("values")
        if not isinstance(fields, list) or not isinstance(values, list):
            raise ServingError('"fields" and "values" must be lists', 400)
        if "label" not in fields:
            raise ServingError(f'"fields" must include "label" (got {fields})', 400)
        if ("scoring_id" in fields) == ("scoring_input" in fields):
            raise ServingError('"fields" must include exactly one of "scoring_id" or "scoring_input"', 400)
        key = "scoring_id" if "scoring_id" in fields else "scoring_input"
        key_index, label_index = fields.index(key), fields.index("label")
        for i, row in enumerate(values):
            if not isinstance(row, list) or len(row) != len(fields):
                raise ServingError(f"values[{i}] must be a list of {len(fields)} items matching fields", 400)
            label = _label(row[label_index], classes, f"values[{i}]")
            if key == "scoring_id":
                if not isinstance(row[key_index], str):
                    raise ServingError(f"values[{i}]: scoring_id must be a string", 400)
                by_id[row[key_index]] = label
            else:
                inline.append((row[key_index], label))
    else:
        items = document if isinstance(document, list) else [document]
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("scoring_id"), str) or "label" not in item:
                raise ServingError(
                    f'feedback item {i} must look like {{"scoring_id": "...", "label": 3}} '
                    '(or send {"fields": [...], "values": [...]})', 400)
            unknown = set(item) - {"scoring_id", "label"}
            if unknown:
                raise ServingError(f"feedback item {i} has unknown keys: {', '.join(sorted(unknown))}", 400)
            by_id[item["scoring_id"]] = _label(item["label"], classes, f"feedback item {i}")
    if not by_id and not inline:
        raise ServingError("feedback holds no records", 400)
    return by_id, inline


def _inline_inputs(values: list[Any], context: Any) -> np.ndarray:
    """Inline ``scoring_input`` values → raw inputs per the model's schema: images of pixel
    numbers, or tabular records (a list of values in the model's field order, categories as text
    or index, or an object naming its fields)."""
    from modelcycle.core.serving.codecs import conform_input

    if context.tabular:
        from modelcycle.core.serving.tabular import records_from_document

        if all(isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
               for value in values):
            return conform_input(np.asarray(values, dtype=np.float32), context.schema)
        blocks = []
        for i, value in enumerate(values):
            try:
                form = {"instances": [value]} if isinstance(value, dict) else {"input_data": [{"values": [value]}]}
                blocks.append(records_from_document(form, context.schema))
            except ServingError as exc:
                raise ServingError(f"values[{i}] scoring_input: {exc}", 400) from None
        return np.concatenate(blocks)
    try:
        raw = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        raise ServingError("scoring_input values must be equal-sized arrays of pixel numbers", 400) from None
    return conform_input(raw, context.schema)


def add_monitoring_routes(
    app: Any, logger: Any, pipeline: Any, authorized: Callable[[Any], bool], error: Callable[..., Any],
    read_body: Callable[[Any], Any],
) -> None:
    """Add ``/feedback`` and ``/payload/flush`` to the endpoint ``app``."""
    classes = len(pipeline.manifest.classes)

    def unauthorized() -> Response:
        return error(401, "missing or wrong bearer token (Authorization: Bearer <token>)", **{"WWW-Authenticate": "Bearer"})

    async def flush_now() -> int:
        return await asyncio.get_running_loop().run_in_executor(None, logger.flush)

    @app.post("/payload/flush")
    async def payload_flush(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            drained = await flush_now()
        except MonitoringError as exc:
            return error(503, str(exc))
        return JSONResponse({"drained": drained, **logger.status()})

    @app.post("/feedback")
    async def post_feedback(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        started = time.perf_counter()
        try:
            body = await read_body(request)
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ServingError(f"malformed JSON body: {exc}", 400) from None
            by_id, inline = parse_feedback(document, classes)
            if inline:
                data = _inline_inputs([value for value, _ in inline], pipeline.context)
                probabilities = pipeline.predict(data)
                scoring_id = uuid.uuid4().hex
                ids = logger.log(scoring_id, data, probabilities, (time.perf_counter() - started) * 1000, force=True,
                                 tabular=pipeline.context.tabular)
                by_id.update(zip(ids, (label for _, label in inline)))
            await flush_now()
            loop = asyncio.get_running_loop()
            stored = await loop.run_in_executor(None, lambda: logger.open_store().add_feedback(by_id, logger.deployment_id))
        except ServingError as exc:
            return error(exc.status_code, str(exc))
        except UnknownScoringIdError as exc:
            return error(404, str(exc))
        except MonitoringError as exc:
            return error(503, str(exc))
        except OSError as exc:
            return error(503, f"payload journal unavailable: {exc}")
        return JSONResponse({"stored": stored, "scoring_ids": list(by_id)})
