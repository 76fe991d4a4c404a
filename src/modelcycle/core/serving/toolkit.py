"""Client errors in the language of AWS's inference toolkit (``sagemaker-inference``).

SageMaker's framework serving containers dispatch ``code/inference.py`` through the toolkit's
``Transformer``, which answers a :class:`~sagemaker_inference.errors.BaseInferenceToolkitError`
with its ``status_code`` and any other exception with 500. :func:`client_error` turns
modelcycle's :class:`~modelcycle.core.errors.ServingError` (415 unsupported type, 400 bad body,
406 unsupported Accept, 413 too large...) into an error that is both: still a ``ServingError``
for modelcycle's own callers, and the toolkit's ``GenericInferenceToolkitError`` with the same
status, so a bad request gets the same 4xx on SageMaker as on the local endpoint. Without the
toolkit installed, the error is returned unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from modelcycle.core.errors import ServingError

__all__ = ["client_error", "speaks_toolkit"]

F = TypeVar("F", bound=Callable[..., Any])


@functools.lru_cache(maxsize=1)
def _toolkit_error_class() -> type[ServingError] | None:
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        return None

    class ToolkitServingError(ServingError, GenericInferenceToolkitError):
        """A ServingError the inference toolkit answers with its ``status_code``."""

        def __init__(self, message: str, status_code: int = 400) -> None:
            GenericInferenceToolkitError.__init__(self, status_code, message)
            self.args = (message,)

        def __str__(self) -> str:
            return str(self.message)

    return ToolkitServingError


def client_error(error: ServingError) -> ServingError:
    """``error`` as an error the inference toolkit maps to ``error.status_code`` (``error``
    itself when the toolkit is not installed or it already is one)."""
    cls = _toolkit_error_class()
    if cls is None or isinstance(error, cls):
        return error
    converted = cls(str(error), error.status_code)
    converted.__cause__ = error.__cause__
    return converted


def speaks_toolkit(handler: F) -> F:
    """``handler`` raising :func:`client_error` of any ServingError it raises; the signature
    is kept (the toolkit passes a context only to handlers that take one more argument)."""

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except ServingError as exc:
            raise client_error(exc) from exc.__cause__

    return wrapped  # type: ignore[return-value]
