"""Core default handlers, registered ``trylast``: a framework overrides one by implementing it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcycle.core.markers import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from modelcycle.core.serving.context import ServingContext


@hookimpl(trylast=True)
def input_fn(body: bytes, content_type: str, context: ServingContext) -> np.ndarray:
    """Decode JSON or NPY raw pixels into ``(N, C, H, W)`` float32, or tabular records into
    ``(N, F)`` float32, per the manifest's input schema (see :mod:`.serving.codecs`)."""
    from modelcycle.core.serving.codecs import decode_request

    return decode_request(body, content_type, context.schema)


@hookimpl(trylast=True)
def output_fn(prediction: np.ndarray, accept: str, context: ServingContext, scoring_id: str | None) -> tuple[bytes, str]:
    """Encode probabilities as OpenScale-shaped JSON (with ``scoring_id``, and
    ``prediction_label`` when the classes have names) or NPY."""
    from modelcycle.core.serving.codecs import encode_response

    return encode_response(prediction, accept, scoring_id, getattr(context, "classes", None))  # no context: no names
