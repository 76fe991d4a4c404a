"""Request decoding and response encoding for the scoring contract.

What a request carries follows the manifest's :class:`~modelcycle.core.artifacts.InputSchema`.
A tabular model takes named records (see :mod:`.tabular`). An image model takes raw pixels as
the seeds send them (0-255 numbers), images of the schema's ``(C, H, W)``, any size and channels:

* ``application/json``: ``{"input_data": [{"values": X}]}``, ``{"instances": X}`` or a bare ``X``,
  where ``X`` is ``N×H×W``, ``N×C×H×W``, ``N×H×W×C``, ``N×(C·H·W)`` or a single image;
* ``application/x-npy``: one numpy array of those shapes (``allow_pickle=False``).

Responses are the OpenScale shape
``{"predictions": [{"fields": ["prediction", "probability"], "values": [[label, [p…]], …]}]}``
(plus ``scoring_id``) or, for ``Accept: application/x-npy``, the ``(N, K)`` probability array.
When the data set names its classes, the fields are ``["prediction", "prediction_label",
"probability"]`` (``prediction_label`` the class name); classes named by their own index
(``"0"``..``"9"`` of MNIST) are not names, so those responses keep the two fields the seeds'
clients read.
Every client mistake raises :class:`ServingError` with a 4xx status and a message saying what is
wrong; nothing here can produce a 5xx for bad input.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelcycle.core.errors import ServingError

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.artifacts import InputSchema

__all__ = [
    "JSON",
    "NPY",
    "decode_request",
    "conform_images",
    "conform_input",
    "class_names",
    "encode_response",
    "media_type",
    "negotiate_accept",
]

JSON = "application/json"
NPY = "application/x-npy"
_NUMERIC_KINDS = frozenset("uif")


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type/Accept value (``'application/json; x'`` → ``'application/json'``)."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def negotiate_accept(accept: str | None) -> str:
    """Pick the response type from an Accept header; JSON unless NPY is asked for.

    Raises:
        ServingError: 406 when the client accepts neither JSON nor NPY.
    """
    if not accept:
        return JSON
    for part in accept.split(","):
        kind = media_type(part)
        if kind in (JSON, "*/*", "application/*"):
            return JSON
        if kind == NPY:
            return NPY
    raise ServingError(
        f"cannot answer with Accept '{accept}': supported response types are {JSON} and {NPY}",
        406,
    )


def _json_values(document: Any) -> Any:
    if isinstance(document, dict):
        if "input_data" in document:
            rows = document["input_data"]
            if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
                raise ServingError('"input_data" must be a list like [{"values": [...]}]', 400)
            if "values" not in rows[0]:
                raise ServingError('"input_data"[0] has no "values" key', 400)
            if len(rows) == 1:
                return rows[0]["values"]
            for index, row in enumerate(rows):
                if not isinstance(row, dict) or not isinstance(row.get("values"), list):
                    raise ServingError(f'"input_data"[{index}] must be an object with a "values" list', 400)
            return [value for row in rows for value in row["values"]]
        if "instances" in document:
            return document["instances"]
        keys = ", ".join(sorted(document)) or "none"
        raise ServingError(
            f'JSON body must have "input_data" or "instances" (got keys: {keys})', 400
        )
    if isinstance(document, list):
        return document
    raise ServingError("JSON body must be an object or an array of pixel values", 400)


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServingError(f"malformed JSON body: {exc}", 400) from None


def _decode_json(body: bytes) -> np.ndarray:
    values = _json_values(_load_json(body))
    try:
        array = np.asarray(values)  # no dtype: numpy would turn "12" into 12.0 and null into NaN
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind not in _NUMERIC_KINDS:
        raise ServingError(
            "pixel values must be a rectangular array of numbers (rows of equal length, no "
            "strings or nulls)",
            400,
        )
    return array.astype(np.float32, copy=False)


def _decode_npy(body: bytes) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        raise ServingError(f"body is not a valid .npy array ({exc})", 400) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in _NUMERIC_KINDS:
        raise ServingError(
            f"npy array must hold numbers (dtype {getattr(array, 'dtype', '?')} given)", 400
        )
    return array.astype(np.float32, copy=False)


def conform_images(array: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Reshape ``array`` to ``(N, C, H, W)`` float32 and check it holds finite 0-255 pixels.

    Raises:
        ServingError: 400 naming the expected shapes, or the bad values.
    """
    c, h, w = input_shape
    shape = array.shape
    if shape == (h, w) and c == 1 or shape == (c, h, w):
        array = array.reshape(1, c, h, w)
    elif shape == (h, w, c):
        array = array.reshape(1, h, w, c).transpose(0, 3, 1, 2)
    elif array.ndim == 3 and shape[1:] == (h, w) and c == 1:
        array = array.reshape(shape[0], 1, h, w)
    elif array.ndim == 4 and shape[1:] == (c, h, w):
        pass
    elif array.ndim == 4 and shape[1:] == (h, w, c):
        array = array.transpose(0, 3, 1, 2)
    elif array.ndim == 2 and shape[1] == c * h * w:
        array = array.reshape(shape[0], c, h, w)
    else:
        expected = [f"N×{h}×{w}"] if c == 1 else []
        expected += [f"N×{c}×{h}×{w}", f"N×{h}×{w}×{c}", f"N×{c * h * w}"]
        raise ServingError(
            f"input has shape {list(shape)}; expected one of {', '.join(expected)} "
            "(N images of raw pixels)",
            400,
        )
    if array.shape[0] == 0:
        raise ServingError("input holds no images (N = 0)", 400)
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ServingError("input contains NaN or infinite values", 400)
    if low < 0.0 or high > 255.0:
        raise ServingError(
            f"pixel values must be raw intensities in 0..255 (got {low:g}..{high:g}); the "
            "model's own scaling is applied on the server",
            400,
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _is_tabular(schema: InputSchema | tuple[int, ...]) -> bool:
    return getattr(schema, "kind", "image") == "tabular"


def conform_input(array: np.ndarray, schema: InputSchema | tuple[int, ...]) -> np.ndarray:
    """Check numeric input against the schema: raw pixels ``(N, C, H, W)`` for an image schema
    (or a bare ``(C, H, W)`` shape), raw records ``(N, F)`` for a tabular one; float32.

    Raises:
        ServingError: 400 naming what is wrong.
    """
    if _is_tabular(schema):
        from modelcycle.core.serving.tabular import conform_records

        return conform_records(np.asarray(array), schema)  # type: ignore[arg-type]
    shape = tuple(getattr(schema, "shape", schema))
    if len(shape) != 3:
        raise ServingError(f"the model's image input schema has shape {list(shape)}, not (C, H, W)", 500)
    return conform_images(np.asarray(array), shape)  # type: ignore[arg-type]


def decode_request(body: bytes, content_type: str, schema: InputSchema | tuple[int, ...]) -> np.ndarray:
    """Decode a scoring request into raw pixels ``(N, C, H, W)`` float32, or for a tabular
    ``schema`` raw records ``(N, F)`` float32 (see :mod:`.tabular`). ``schema`` is the
    manifest's input schema, or the ``(C, H, W)`` of an image.

    Raises:
        ServingError: 415 for an unsupported content type, 400 for a bad body.
    """
    kind = media_type(content_type) or JSON
    if kind == JSON:
        if _is_tabular(schema):
            from modelcycle.core.serving.tabular import records_from_document

            return records_from_document(_load_json(body), schema)  # type: ignore[arg-type]
        array = _decode_json(body)
    elif kind == NPY:
        array = _decode_npy(body)
    else:
        raise ServingError(
            f"unsupported Content-Type '{content_type}': send {JSON} or {NPY}", 415
        )
    return conform_input(array, schema)


def class_names(classes: Sequence[str] | None) -> list[str] | None:
    """The classes as names for ``prediction_label``; ``None`` when there are none or they are
    just their indexes (``"0"``, ``"1"``, ...)."""
    if not classes:
        return None
    names = [str(c) for c in classes]
    return None if names == [str(i) for i in range(len(names))] else names


def encode_response(probabilities: np.ndarray, accept: str, scoring_id: str | None = None,
                    classes: Sequence[str] | None = None) -> tuple[bytes, str]:
    """Encode ``(N, K)`` class probabilities as OpenScale-shaped JSON or as NPY; with named
    ``classes`` (see :func:`class_names`) each JSON row carries ``prediction_label`` too."""
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(probabilities, dtype=np.float32), allow_pickle=False)
        return buffer.getvalue(), NPY
    probabilities = np.asarray(probabilities, dtype=np.float32)
    labels = probabilities.argmax(axis=1).tolist()
    names = class_names(classes)
    if names is not None and len(names) == probabilities.shape[1]:
        fields = ["prediction", "prediction_label", "probability"]
        values = [[label, names[label], row] for label, row in zip(labels, probabilities)]
    else:
        fields = ["prediction", "probability"]
        values = [[label, row] for label, row in zip(labels, probabilities)]
    document: dict[str, Any] = {"predictions": [{"fields": fields, "values": values}]}
    if scoring_id is not None:
        document["scoring_id"] = scoring_id
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), JSON
