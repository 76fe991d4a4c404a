"""Serving a script-mode model through the user's own SageMaker handlers.

:class:`ScriptPipeline` is what the endpoint holds instead of
:class:`~modelcycle.core.serving.pipeline.InferencePipeline` when the manifest records a model
trained by the user's script: the user's ``inference.py`` (see :mod:`.script_handlers`) decodes,
predicts and encodes, and the body it returns is what the client gets, byte for byte.

For payload logging and monitoring the pipeline also reads what the handlers produced:

* the request's raw images when its body is an ``.npy`` array, a JSON list or a JSON
  ``{"instances": ...}`` of the schema's ``C×H×W`` pixels in 0..255 (:func:`request_images`:
  what the client sent, also when ``input_fn`` normalises it), else the decoded input
  (``input_fn``'s result as an array): raw images when it holds such pixels (any layout
  :func:`~.codecs.conform_images` knows), else its values as float32 records;
* the prediction as class probabilities ``(N, K)``: rows that are probabilities as they are,
  log-probabilities (all ≤ 0) exponentiated, other scores softmaxed; ``(N,)`` integers as labels.

What cannot be read so is served anyway; the request is then logged without a prediction
(``K = 0``), said once in the endpoint log.

Errors: a handler raising ``ValueError`` or ``TypeError`` is a client's mistake, answered 400 with
its message (:class:`~modelcycle.core.errors.ServingError`); anything else propagates (the
endpoint answers 500 and logs the traceback).
"""

from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from modelcycle.core.artifacts import read_manifest, verify_files
from modelcycle.core.errors import ServingError
from modelcycle.core.registry import PluginRegistry
from modelcycle.core.serving.codecs import JSON, NPY, conform_images, media_type
from modelcycle.core.serving.context import ServingContext
from modelcycle.core.serving.script_codecs import decode, to_numpy
from modelcycle.core.serving.script_handlers import load_handlers

__all__ = ["ScriptPipeline", "ScriptResult", "as_probabilities", "monitored_inputs", "request_images"]

log = logging.getLogger(__name__)
_NUMERIC = frozenset("uifb")


class ScriptResult(NamedTuple):
    """One scored request: the handlers' response and what monitoring records of it.

    ``inputs`` is ``None`` when the decoded input is not an array of numbers (nothing is logged);
    ``probabilities`` is ``(N, K)``, with ``K = 0`` when the prediction could not be read as
    class probabilities; ``tabular`` says ``inputs`` are float32 records, not raw pixels.
    """

    body: bytes
    content_type: str
    inputs: np.ndarray | None
    probabilities: np.ndarray
    tabular: bool
    records: int


@contextmanager
def client_errors() -> Iterator[None]:
    """``ValueError``/``TypeError`` from a user's handler → :class:`ServingError` 400."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise ServingError(str(exc) or type(exc).__name__, 400) from exc


def monitored_inputs(data: Any, context: ServingContext) -> tuple[np.ndarray | None, bool]:
    """``(inputs, tabular)`` to journal for ``input_fn``'s result ``data`` (see the module doc)."""
    array = to_numpy(data)
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (ValueError, TypeError):
            return None, False
    if array.dtype.kind not in _NUMERIC or array.ndim == 0 or array.size == 0:
        return None, False
    array = array.astype(np.float32, copy=False)
    if not context.tabular and len(context.input_shape) == 3:
        try:
            return conform_images(array, context.input_shape), False  # type: ignore[arg-type]
        except ServingError:
            pass
    return np.ascontiguousarray(array.reshape(len(array), -1)), True


def request_images(body: bytes, content_type: str, context: ServingContext) -> np.ndarray | None:
    """The raw images ``(N, C, H, W)`` float32 a request body holds, or ``None``: the body must
    decode by the defaults (NPY; JSON as a list or ``{"instances": [...]}``) into pixels in
    0..255 of an image schema's shape."""
    if context.tabular or len(context.input_shape) != 3:
        return None
    try:
        data = decode(body, content_type)
    except ServingError:
        return None
    if data.dtype == object and data.ndim == 0 and isinstance(data.item(), dict):
        data = np.asarray(data.item().get("instances", []), dtype=object)
    try:
        array = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        return None
    if array.size == 0:
        return None
    try:
        return conform_images(array, context.input_shape)  # type: ignore[arg-type]
    except ServingError:
        return None


def as_probabilities(prediction: Any, records: int | None, classes: int) -> np.ndarray | None:
    """``prediction`` as class probabilities ``(N, K)`` float32, or ``None`` when it is not one of:
    ``(N, K)`` probabilities, log-probabilities or scores; ``(N,)`` integer labels in ``0..K-1``.
    ``records`` (the decoded input's ``N``, when known) and ``classes`` (``K``, 0: any) must match."""
    array = to_numpy(prediction)
    if isinstance(array, (list, tuple)):
        try:
            array = np.asarray(array)
        except (ValueError, TypeError):
            return None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in _NUMERIC or array.ndim not in (1, 2):
        return None
    n = len(array)
    if n == 0 or records is not None and n != records:
        return None
    if array.ndim == 1:
        if array.dtype.kind not in "iu" or not classes or array.min() < 0 or array.max() >= classes:
            return None
        return np.eye(classes, dtype=np.float32)[array]
    if classes and array.shape[1] != classes or array.shape[1] < 2:
        return None
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        return None
    if values.min() >= 0 and values.max() <= 1 and np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        return values.astype(np.float32)
    if values.max() <= 0:  # log-probabilities (log_softmax)
        exp = np.exp(values)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    shifted = np.exp(values - values.max(axis=1, keepdims=True))  # scores (logits)
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def _response(result: Any, accept: str) -> tuple[bytes, str]:
    """An ``output_fn``/``transform_fn`` result → ``(body, content_type)``: a body alone is
    answered as the accepted type (JSON for none or ``*/*``)."""
    content_type = None
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
    if isinstance(result, str):
        result = result.encode()
    if not isinstance(result, (bytes, bytearray, memoryview)):
        raise TypeError(f"the inference handlers' output_fn returned {type(result).__name__}, not the response "
                        "body (bytes or str, or a (body, content_type) tuple)")
    if not content_type:
        kind = media_type(accept.split(",", 1)[0]) if accept else ""
        content_type = JSON if kind in ("", "*/*", "application/*") else kind
    return bytes(result), str(content_type)


class ScriptPipeline:
    """Loads a script-mode model with the user's ``model_fn`` (or the framework's default) and
    scores requests through the user's handlers.

    Every file the manifest records is checked against its SHA-256 before the model loads.
    Requests are scored one at a time (``batchable`` is False: the user's handlers decide what a
    batch is).
    """

    batchable = False

    def __init__(self, model_dir: str | Path, registry: PluginRegistry | None = None) -> None:
        self.model_dir = Path(model_dir)
        manifest = read_manifest(self.model_dir)
        verify_files(self.model_dir, manifest)
        self.registry = registry or PluginRegistry()
        self.context = ServingContext(manifest=manifest, model_dir=self.model_dir)
        self.handlers = load_handlers(self.model_dir, self.context, self.registry)
        self.model = self.handlers.model_fn(str(self.model_dir))
        self._classes = len(manifest.classes)
        self._warned = False

    @property
    def manifest(self) -> Any:
        return self.context.manifest

    def _run(self, body: bytes, content_type: str, accept: str) -> tuple[Any, Any, Any]:
        """``(decoded input, prediction, handler result)``; input and prediction are ``None``
        with ``transform_fn``."""
        handlers = self.handlers
        with client_errors():
            if handlers.transform_fn is not None:
                return None, None, handlers.transform_fn(self.model, body, content_type, accept)
            data = handlers.input_fn(body, content_type)
            prediction = handlers.predict_fn(data, self.model)  # type: ignore[misc]
            return data, prediction, handlers.output_fn(prediction, accept)

    def score(self, body: bytes, content_type: str, accept: str) -> ScriptResult:
        """Score one request through the handlers (see the module doc for what is recorded).

        Raises:
            ServingError: 400 when a handler raised ``ValueError``/``TypeError``, or the default
                codecs' 4xx; any other exception of a handler passes through.
        """
        data, prediction, result = self._run(body, content_type or JSON, accept or JSON)
        payload, response_type = _response(result, accept)
        inputs, tabular = monitored_inputs(data, self.context) if data is not None else (None, False)
        raw = request_images(body, content_type or JSON, self.context) if data is not None else None
        if raw is not None and (inputs is None or len(raw) == len(inputs)):
            inputs, tabular = raw, False  # what the client sent, whatever input_fn made of it
        records = len(inputs) if inputs is not None else 1
        probabilities = as_probabilities(prediction, records if inputs is not None else None, self._classes)
        if probabilities is None:
            self._warn_once(prediction)
            probabilities = np.zeros((records, 0), dtype=np.float32)
        return ScriptResult(payload, response_type, inputs, probabilities, tabular, records)

    def predict(self, data: np.ndarray) -> np.ndarray:
        """Raw inputs (as :func:`~.codecs.conform_input` gives them) → class probabilities, through
        the handlers with the inputs sent as an NPY body (inline ``/feedback`` records).

        Raises:
            ServingError: 400 when the handlers' prediction is not class probabilities or labels.
        """
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(data), allow_pickle=False)
        if self.handlers.transform_fn is not None:
            raise ServingError("this endpoint's handlers define transform_fn, so its predictions cannot be "
                               "labelled inline: send feedback by scoring_id", 400)
        _, prediction, _ = self._run(buffer.getvalue(), NPY, NPY)
        probabilities = as_probabilities(prediction, len(data), self._classes)
        if probabilities is None:
            raise ServingError("this endpoint's predict_fn gives no class probabilities or labels, so its "
                               "records cannot take feedback", 400)
        return probabilities

    def _warn_once(self, prediction: Any) -> None:
        if self._warned:
            return
        self._warned = True
        shape = getattr(to_numpy(prediction), "shape", None)
        log.warning(
            "the inference handlers' prediction (%s%s) is not class probabilities (N, %d) or labels (N,): "
            "responses are served as the handlers give them, but requests are logged without a prediction "
            "(quality monitoring needs one); return probabilities, log-probabilities, scores or labels from "
            "predict_fn to monitor them",
            type(prediction).__name__, f", shape {tuple(shape)}" if shape is not None else "", self._classes,
        )
