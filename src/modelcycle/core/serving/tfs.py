"""modelcycle's pre- and post-processing for SageMaker's TensorFlow Serving container.

SageMaker serves a built-in keras model in its TensorFlow inference image (``tensorflow-inference``,
the image ``TensorFlowModel`` picks). That container's contract (its ``serve.py``,
``python_service.py`` and ``tfs_utils.py``):

* TensorFlow Serving serves every SavedModel under ``/opt/ml/model`` found as
  ``<base>/<version>/saved_model.pb``, under the name ``basename(<base>)`` (or
  ``SAGEMAKER_TFS_DEFAULT_MODEL_NAME``): the keras plugin's ``model/1/`` is model ``model``.
* With ``code/inference.py`` present, ``code/requirements.txt`` is ``pip install``-ed and each
  ``POST /invocations`` runs ``input_handler(data, context)`` → ``POST context.rest_uri`` (TF
  Serving's REST ``/v1/models/<name>:predict``) with what it returned → ``output_handler(response,
  context)``, which returns ``(body, content_type)``. ``data`` is the request's body stream;
  ``context`` carries ``request_content_type`` and ``accept_header`` (both ``application/json``
  when the client sent none), ``rest_uri``, ``model_name`` and the custom attributes.
* The container answers any exception a handler raises with **500** and ``{"error": str(exc)}``;
  a handler cannot choose the status. A client's mistake is therefore raised as
  :class:`TfsClientError`, whose text starts ``client error <4xx>:`` followed by the message the
  local endpoint answers; :func:`parse_client_error` recovers the status and message from the
  container's body (modelcycle's SageMaker client reports that 4xx).

:func:`tfs_handlers` decodes the same JSON (``{"input_data": [{"values": X}]}``,
``{"instances": X}``, a bare ``X``) and NPY bodies as the local endpoint with the same codecs
(:mod:`.codecs`: shape and 0..255 checks, 4xx messages), applies the training-time preprocessing,
sends TF Serving ``{"instances": <normalised, channels-last>}``, and turns its
``{"predictions": [[p…], …]}`` into exactly the local endpoint's response (OpenScale JSON, or the
``(N, K)`` NPY array), without TensorFlow in the Python service.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from modelcycle.core.errors import ServingError

__all__ = ["ENTRY_POINT", "MODEL_NAME", "TfsClientError", "parse_client_error", "tfs_handlers"]

#: TensorFlow Serving's name for the keras plugin's SavedModel (``model/1/`` → ``model``).
MODEL_NAME = "model"

#: ``code/inference.py`` of a built-in keras model served by SageMaker's TensorFlow Serving container.
ENTRY_POINT = '''"""SageMaker TensorFlow Serving entry point written by modelcycle.

TensorFlow Serving runs the SavedModel under model/1/; these handlers decode requests and encode
responses exactly as the local endpoint does (modelcycle.core.serving.tfs).
"""
from pathlib import Path

from modelcycle.core.serving.tfs import tfs_handlers

input_handler, output_handler = tfs_handlers(Path(__file__).resolve().parent.parent)
'''

_CLIENT_ERROR = re.compile(r"^client error (4\d\d): (.*)$", re.DOTALL)


class TfsClientError(ServingError):
    """A client's mistake, its status in its text (the container answers every error with 500)."""

    def __str__(self) -> str:
        return f"client error {self.status_code}: {self.args[0]}"


def parse_client_error(text: str) -> tuple[int, str] | None:
    """``(status, message)`` of a :class:`TfsClientError`'s text, ``None`` for any other text."""
    match = _CLIENT_ERROR.match(text)
    return (int(match.group(1)), match.group(2)) if match else None


def _body(data: Any) -> bytes:
    """The request body as the container hands it: a stream (``req.stream``), bytes or text."""
    if hasattr(data, "read"):
        data = data.read()
    if isinstance(data, str):
        return data.encode("utf-8")
    if data is None:
        return b""
    return bytes(data)


def _model_inputs(raw: np.ndarray, manifest: Any) -> np.ndarray:
    """Raw ``(N, C, H, W)`` pixels (or ``(N, F)`` records) → the SavedModel's float32 input, as the
    keras plugin's ``predict_fn`` builds it: normalised, images channels-last."""
    normalised = manifest.preprocessing.apply(raw)
    return np.ascontiguousarray(normalised if normalised.ndim == 2 else normalised.transpose(0, 2, 3, 1),
                                dtype=np.float32)


def _probabilities(response: Any, classes: int) -> np.ndarray:
    """TF Serving's ``{"predictions": [[p…], …]}`` as ``(N, K)`` float32.

    Raises:
        RuntimeError: TF Serving answered an error, or not ``K`` probabilities per record (a
            server-side fault: the request was already checked).
    """
    status = int(getattr(response, "status_code", 200))
    content = response.content if hasattr(response, "content") else response
    if status != 200:
        raise RuntimeError(f"TensorFlow Serving answered {status}: {bytes(content)[:2000].decode(errors='replace')}")
    try:
        predictions = np.asarray(orjson.loads(content)["predictions"], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise RuntimeError(f"TensorFlow Serving's answer is not {{\"predictions\": [[...]]}}: {exc}") from None
    if predictions.ndim != 2 or predictions.shape[1] != classes:
        raise RuntimeError(f"TensorFlow Serving answered predictions of shape {list(predictions.shape)}, "
                           f"not N×{classes} class probabilities: is model/1/ the model modelcycle trained?")
    return predictions


def tfs_handlers(model_dir: str | Path) -> tuple[Callable[[Any, Any], str], Callable[[Any, Any], tuple[bytes, str]]]:
    """``input_handler, output_handler`` for the model in ``model_dir`` (the container's
    ``/opt/ml/model``: the parent of ``code/inference.py``).

    The manifest's model files (all but ``code/``, which deploying rewrites) are checked against
    their SHA-256 first, as the local endpoint does, so a changed SavedModel is never served.

    Raises:
        ArtifactError: no manifest, or a model file missing or changed.
    """
    from modelcycle.core.artifacts import read_manifest, verify_files
    from modelcycle.core.serving.codecs import decode_request, encode_response, negotiate_accept

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    model_files = {name: digest for name, digest in manifest.files.items() if not name.startswith("code/")}
    if manifest.files:
        verify_files(model_dir, manifest.model_copy(update={"files": model_files}))
    classes = len(manifest.classes)

    def input_handler(data: Any, context: Any) -> str:
        """The request → TF Serving's REST predict body ``{"instances": ...}``."""
        try:
            negotiate_accept(getattr(context, "accept_header", None))
            raw = decode_request(_body(data), getattr(context, "request_content_type", None) or "", manifest.input_schema)
        except ServingError as exc:
            raise TfsClientError(exc.args[0], exc.status_code) from None
        return orjson.dumps({"instances": _model_inputs(raw, manifest)}, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    def output_handler(response: Any, context: Any) -> tuple[bytes, str]:
        """TF Serving's answer → the local endpoint's response body and content type."""
        try:
            accept = negotiate_accept(getattr(context, "accept_header", None))
        except ServingError as exc:
            raise TfsClientError(exc.args[0], exc.status_code) from None
        return encode_response(_probabilities(response, classes), accept, None, manifest.classes)

    return input_handler, output_handler
