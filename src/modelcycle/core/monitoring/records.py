"""The payload record: what an endpoint logs per scored image and the monitoring store ingests.

Whatever platform serves the model, a scored image reaches the store as one
:class:`PayloadRecord`. The local endpoint's journal produces them (see
:mod:`modelcycle.platforms.local.journal`); another platform's payload logger builds them with
:func:`build_records` and hands them to
:meth:`~modelcycle.core.monitoring.store.MonitoringStore.ingest`.

A leaf module of the monitoring package: it imports only numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

__all__ = ["PayloadRecord", "PAYLOAD_COLUMNS", "PAYLOAD_SCHEMA", "payload_schema", "record_ids", "build_records"]


class PayloadRecord(NamedTuple):
    """One scored image, as stored (a tuple in :data:`PAYLOAD_COLUMNS` order, so batches of
    hundreds of thousands insert without conversion).

    Attributes:
        scoring_id: the record's id (:func:`record_ids`); unique, so re-ingesting is a no-op.
        request_id: the scoring request's id (the ``X-Scoring-Id`` the client got).
        scoring_timestamp: UTC seconds since the epoch, when the request was scored.
        deployment_id: the endpoint's name.
        asset_revision: the served model's run id, if known.
        scoring_input: the raw pixels as uint8 bytes in ``C×H×W`` order; a tabular record's raw
            values (the schema's field order, categories as their index) as little-endian
            float32 bytes.
        prediction: the predicted class index.
        probability: the class probabilities as little-endian float32 bytes.
        prediction_probability: the predicted class's probability.
        latency_ms: the request's server-side latency.
        mean_intensity: mean pixel / 255 (a drift statistic, computed once at record time);
            None for a tabular record (its drift is judged per feature on ``scoring_input``).
        ink_fraction: share of pixels above 127 (the other input drift statistic); None for a
            tabular record.
    """

    scoring_id: str
    request_id: str
    scoring_timestamp: float
    deployment_id: str
    asset_revision: str | None
    scoring_input: bytes | None
    prediction: int | None
    probability: bytes | None
    prediction_probability: float | None
    latency_ms: float | None
    mean_intensity: float | None
    ink_fraction: float | None


#: Column order of :class:`PayloadRecord` (the store's payload table columns).
PAYLOAD_COLUMNS: tuple[str, ...] = PayloadRecord._fields

#: The payload data set's schema (what the seed's OpenScale subscription prints).
PAYLOAD_SCHEMA: list[dict[str, Any]] = [
    {"name": "scoring_id", "type": "string", "nullable": False},
    {"name": "scoring_timestamp", "type": "timestamp", "nullable": False},
    {"name": "deployment_id", "type": "string", "nullable": False},
    {"name": "asset_revision", "type": "string", "nullable": True},
    {"name": "scoring_input", "type": "binary", "nullable": True},
    {"name": "prediction", "type": "integer", "nullable": True},
    {"name": "probability", "type": {"containsNull": True, "elementType": "double", "type": "array"}, "nullable": True},
    {"name": "prediction_probability", "type": "double", "nullable": True},
]


def payload_schema(input_schema: Any = None) -> list[dict[str, Any]]:
    """The payload data set's schema for a model's input schema: :data:`PAYLOAD_SCHEMA`, and for
    tabular records its fields as well (``modeling_role: feature``; a categorical field's type
    ``string`` with its ``categories``), which ``scoring_input`` holds as float32 values in that
    order (categories as their index)."""
    if input_schema is None or getattr(input_schema, "kind", "image") != "tabular":
        return [dict(column) for column in PAYLOAD_SCHEMA]
    columns = []
    for column in PAYLOAD_SCHEMA:
        if column["name"] != "scoring_input":
            columns.append(dict(column))
            continue
        columns.append({**column, "type": "binary (float32 × {})".format(len(input_schema.fields))})
        for field in input_schema.fields:
            entry: dict[str, Any] = {"name": field.name, "type": "string" if field.kind == "categorical" else "double",
                                     "nullable": False, "modeling_role": "feature"}
            if field.kind == "categorical":
                entry["categories"] = list(field.categories)
            columns.append(entry)
    return columns


def record_ids(scoring_id: str, n: int) -> list[str]:
    """Per-record ids of a request: the request's id for one image, ``{id}-{i}`` for image i of N > 1."""
    return [scoring_id] if n == 1 else [f"{scoring_id}-{i}" for i in range(n)]


def build_records(
    scoring_ids: Sequence[str], request_ids: Sequence[str], timestamps: Sequence[float], latencies: Sequence[float | None],
    deployment_id: str, asset_revision: str | None, pixel_bytes: bytes, probability_bytes: bytes,
    chw: int, classes: int, tabular: bool = False,
) -> list[PayloadRecord]:
    """Records for ``m`` images of one shape, the statistics computed vectorised.

    Args:
        scoring_ids, request_ids, timestamps, latencies: one per image (``m`` each).
        pixel_bytes: the ``m`` images' uint8 pixels back to back, ``chw`` bytes each (tabular:
            ``chw`` little-endian float32 values each, the image statistics left None).
        probability_bytes: their little-endian float32 probabilities, ``classes`` each; with
            ``classes`` 0 the records carry no prediction (``prediction``, ``probability`` and
            ``prediction_probability`` None).
    """
    size = chw * (4 if tabular else 1)
    m = len(pixel_bytes) // size
    probabilities = np.frombuffer(probability_bytes, "<f4").reshape(m, classes)
    mean: Any
    ink: Any
    if tabular:
        mean = ink = repeat(None)
    else:
        pixels = np.frombuffer(pixel_bytes, np.uint8).reshape(m, chw)
        mean = (pixels.sum(axis=1, dtype=np.int64) / (255.0 * chw)).tolist()
        ink = (np.count_nonzero(pixels > 127, axis=1) / chw).tolist()
    pk = 4 * classes
    prediction: Any
    confidence: Any
    probability: Any
    if classes:
        prediction = probabilities.argmax(axis=1).tolist()
        confidence = probabilities.max(axis=1).astype(np.float64).tolist()
        probability = [probability_bytes[i:i + pk] for i in range(0, m * pk, pk)]
    else:  # logged without a prediction (a script model's handlers gave none readable)
        prediction = confidence = probability = repeat(None)
    return list(map(PayloadRecord._make, zip(
        scoring_ids, request_ids, timestamps, repeat(deployment_id), repeat(asset_revision),
        [pixel_bytes[i:i + size] for i in range(0, m * size, size)], prediction,
        probability, confidence, latencies, mean, ink,
    )))
