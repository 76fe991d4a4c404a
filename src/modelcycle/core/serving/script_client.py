"""Talking to a script-mode endpoint as modelcycle's own client (``score``, ``log-payload``).

A built-in model's endpoint speaks modelcycle's format (``{"input_data": [{"values": ...}]}``
in, ``{"predictions": [{"fields": [...], "values": ...}]}`` out). A script-mode model's endpoint
answers through the user's ``inference.py``, so its client sends what SageMaker's framework
containers default to and what the seeds' ``input_fn`` reads: the raw images as one ``.npy``
array (``application/x-npy``). The answer is read whatever the user's ``output_fn`` made of it:

* ``application/x-npy``: the prediction array;
* JSON: a list ``(N, K)`` (or ``(N,)`` labels), or an object whose ``predictions`` holds one;

and it is turned into class probabilities with the endpoint's own rule
(:func:`~modelcycle.core.serving.script_pipeline.as_probabilities`: probabilities as they are,
log-probabilities exponentiated, scores softmaxed, integer labels one-hot), so a client's
predictions and the endpoint's payload log agree.

The endpoint names each request's records ``{scoring_id}-{i}`` (one record: the id itself) and
sends the id in the ``x-scoring-id`` header; the body is the user's, so it holds no id.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from modelcycle.core.errors import ServingError
from modelcycle.core.serving.codecs import JSON, NPY, media_type

__all__ = ["REQUEST_TYPE", "ScriptAnswer", "script_manifest", "npy_body", "read_answer"]

#: what modelcycle's clients send a script-mode endpoint (the seeds' handlers read it)
REQUEST_TYPE = NPY


class ScriptAnswer:
    """One script-mode endpoint answer read generically: ``probabilities`` ``(N, K)`` float32
    and ``document``, the JSON-able form of what the handlers returned (for ``score --json``)."""

    def __init__(self, probabilities: np.ndarray, document: Any) -> None:
        self.probabilities = probabilities
        self.document = document


def script_manifest(endpoint: Mapping[str, Any], work_dir: Path) -> Any:
    """The manifest of the model ``endpoint`` (a deploy record) serves when the user's script
    trained it (``manifest.script``), else ``None``. The model is the record's ``model_dir``,
    else the run's model under ``work_dir/runs``; one that cannot be read counts as built-in
    (modelcycle's own format)."""
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.errors import ModelcycleError

    model_dir = endpoint.get("model_dir")
    if not model_dir and endpoint.get("run_id"):
        model_dir = Path(work_dir) / "runs" / str(endpoint["run_id"]) / "model"
    if not model_dir:
        return None
    try:
        manifest = read_manifest(Path(model_dir))
    except (ModelcycleError, OSError, ValueError):
        return None
    return manifest if manifest.script is not None else None


def npy_body(images: Any) -> bytes:
    """``images`` (raw pixels as the data set holds them) as an ``.npy`` request body."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(np.asarray(images)), allow_pickle=False)
    return buffer.getvalue()


def _prediction(body: bytes, content_type: str) -> tuple[Any, Any]:
    """``(prediction array-like, JSON-able document)`` of an answer body."""
    kind = media_type(content_type)
    if kind == NPY or body[:6] == b"\x93NUMPY":
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
            raise ServingError(f"the endpoint answered {NPY} that is not a valid .npy array ({exc})", 502) from None
        return array, {"predictions": array.tolist()}
    import orjson

    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        shown = kind or "no content type"
        raise ServingError(f"the endpoint's inference handlers answered {shown} that is neither JSON nor .npy: "
                           f"have output_fn return {JSON} or {NPY}", 502) from None
    if isinstance(document, dict):
        return document.get("predictions"), document
    return document, document


def read_answer(body: bytes, content_type: str, records: int, classes: int) -> ScriptAnswer:
    """Read a script-mode endpoint's answer to ``records`` inputs of a ``classes``-class model.

    Raises:
        ServingError: the answer is not a prediction per record that the endpoint's probability
            rule can read (names what came back and what is expected).
    """
    from modelcycle.core.serving.script_pipeline import as_probabilities

    prediction, document = _prediction(body, content_type)
    probabilities = as_probabilities(prediction, records, classes) if prediction is not None else None
    if probabilities is None:
        shape = getattr(np.asarray(prediction, dtype=object), "shape", None) if prediction is not None else None
        raise ServingError(
            f"cannot read the endpoint's answer as predictions for {records} record(s) of {classes} classes "
            f"(got {type(prediction).__name__}{f' of shape {list(shape)}' if shape is not None else ''}): "
            "have output_fn return the (N, K) probabilities, log-probabilities or scores, or (N,) labels, "
            'as NPY, a JSON list or {"predictions": ...}', 502)
    return ScriptAnswer(probabilities, document)
