"""The SageMaker inference toolkit's default decoding and encoding, for the user's handlers.

A script-mode model's ``inference.py`` may leave out ``input_fn`` and ``output_fn``; SageMaker's
framework containers then decode the request body into a numpy array and encode the prediction
by content type (``sagemaker_inference.decoder`` / ``encoder``). These are the same rules:

* ``application/json``: ``json.loads`` → ``np.array``; answers are ``json.dumps`` of the
  prediction (numpy arrays and tensors as nested lists);
* ``text/csv``: comma-separated rows → a 2-D float array (one row: 1-D); answers one row per
  line;
* ``application/x-npy``: one ``.npy`` array (never pickled objects); answers ``np.save``.

Framework plugins build on these (the PyTorch default turns the array into a tensor). Every bad
body raises :class:`~modelcycle.core.errors.ServingError` with a 4xx status.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from modelcycle.core.errors import ServingError
from modelcycle.core.serving.codecs import JSON, NPY, media_type

__all__ = ["CSV", "SUPPORTED", "decode", "encode", "to_numpy"]

CSV = "text/csv"
#: The content types the defaults decode and encode.
SUPPORTED = (JSON, CSV, NPY)


def decode(body: bytes | str, content_type: str) -> np.ndarray:
    """``body`` → numpy array per ``content_type`` (JSON when none is given).

    Raises:
        ServingError: 415 for another content type, 400 for a body that does not parse.
    """
    kind = media_type(content_type) or JSON
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if kind == JSON:
        try:
            return np.array(json.loads(raw))
        except ValueError as exc:
            raise ServingError(f"malformed JSON body: {exc}", 400) from None
    if kind == CSV:
        try:
            array = np.genfromtxt(io.StringIO(raw.decode("utf-8")), delimiter=",", dtype=np.float32)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ServingError(f"malformed CSV body: {exc}", 400) from None
        if array.size == 0 or np.isnan(array).any():
            raise ServingError("CSV body must hold rows of comma-separated numbers", 400)
        return array
    if kind == NPY:
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
            raise ServingError(f"body is not a valid .npy array ({exc})", 400) from None
    raise ServingError(f"unsupported Content-Type '{content_type}': send {', '.join(SUPPORTED)}", 415)


def to_numpy(value: Any) -> Any:
    """A tensor (torch, TensorFlow) or array-like as a numpy array; other values unchanged.

    Tensors are detached and moved to the CPU first (``.detach().cpu()`` when they have it)."""
    if isinstance(value, np.ndarray):
        return value
    for step in ("detach", "cpu"):
        method = getattr(value, step, None)
        if callable(method):
            value = method()
    if hasattr(value, "numpy") and callable(value.numpy):
        return np.asarray(value.numpy())
    if hasattr(value, "__array__"):
        return np.asarray(value)
    return value


def _jsonable(value: Any) -> Any:
    value = to_numpy(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def encode(prediction: Any, accept: str) -> tuple[bytes, str]:
    """Encode ``prediction`` for the ``accept`` media type (JSON when none or ``*/*``);
    returns ``(body, content_type)``.

    Raises:
        ServingError: 406 for a media type other than JSON, CSV or NPY.
    """
    kind = media_type(accept.split(",", 1)[0]) if accept else JSON
    if kind in ("", "*/*", "application/*"):
        kind = JSON
    if kind == JSON:
        return json.dumps(_jsonable(prediction)).encode(), JSON
    if kind == CSV:
        buffer = io.StringIO()
        array = np.asarray(to_numpy(prediction))
        np.savetxt(buffer, array if array.ndim else array.reshape(1), delimiter=",", fmt="%s")
        return buffer.getvalue().encode(), CSV
    if kind == NPY:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(to_numpy(prediction)), allow_pickle=False)
        return buffer.getvalue(), NPY
    raise ServingError(f"cannot answer with Accept '{accept}': supported types are {', '.join(SUPPORTED)}", 406)
