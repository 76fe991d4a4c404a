"""Keras's default SageMaker handlers for a script-mode model's ``inference.py``.

SageMaker's TensorFlow serving container answers TensorFlow Serving's REST format; the defaults
follow it:

* ``model_fn``: the SavedModel in the model directory (the highest numbered version directory,
  ``1/``, ``2/``..., as TensorFlow Serving picks, or the directory itself), loaded with
  ``tf.saved_model.load``; else the one ``.keras`` file at its top, loaded in safe mode;
* ``input_fn``: JSON ``{"instances": X}`` or ``{"inputs": X}`` (or a bare ``X``), CSV or NPY,
  as a numpy array;
* ``predict_fn``: ``model.predict`` for a Keras model, else the SavedModel's
  ``serving_default`` signature (its one output);
* ``output_fn``: JSON ``{"predictions": ...}``, CSV or NPY.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modelcycle.core.errors import ServingError
from modelcycle.core.serving import script_codecs
from modelcycle.core.serving.codecs import JSON, media_type

__all__ = ["default_handlers", "saved_model_dir"]


def saved_model_dir(model_dir: Path) -> Path | None:
    """Where the SavedModel TensorFlow Serving would serve from ``model_dir`` is, or ``None``."""
    if (model_dir / "saved_model.pb").is_file():
        return model_dir
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _keras_file(model_dir: Path) -> Path | None:
    files = [p for p in model_dir.iterdir() if p.is_file() and p.suffix == ".keras"]
    return files[0] if len(files) == 1 else None


def input_fn(body: bytes, content_type: str) -> np.ndarray:
    """TensorFlow Serving's JSON request (``instances``/``inputs``), else the toolkit's decoding."""
    if (media_type(content_type) or JSON) != JSON:
        return script_codecs.decode(body, content_type)
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ServingError(f"malformed JSON body: {exc}", 400) from None
    if isinstance(document, dict):
        key = next((k for k in ("instances", "inputs") if k in document), None)
        if key is None:
            raise ServingError('JSON body must be {"instances": [...]} or {"inputs": [...]} (TensorFlow Serving)', 400)
        document = document[key]
    return np.asarray(document, dtype=np.float32)


def predict_fn(data: Any, model: Any) -> np.ndarray:
    """``model.predict`` for a Keras model, else the ``serving_default`` signature's output."""
    import keras
    import tensorflow as tf

    if isinstance(model, keras.Model):
        return np.asarray(model.predict(np.asarray(data), verbose=0))
    signature = model.signatures["serving_default"]
    _, specs = signature.structured_input_signature
    (name, spec), = specs.items()
    outputs = signature(**{name: tf.convert_to_tensor(np.asarray(data), dtype=spec.dtype)})
    return next(iter(outputs.values())).numpy() if len(outputs) == 1 else {k: v.numpy() for k, v in outputs.items()}


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """JSON ``{"predictions": ...}`` (TensorFlow Serving's answer), CSV or NPY."""
    kind = media_type(accept.split(",", 1)[0]) if accept else ""
    if kind in ("", JSON, "*/*", "application/*"):
        return script_codecs.encode({"predictions": prediction}, JSON)
    return script_codecs.encode(prediction, accept)


def default_handlers(model_dir: Path) -> dict[str, Callable[..., Any]]:
    """The defaults for ``model_dir``; ``model_fn`` only when it holds a SavedModel or a
    ``.keras`` file."""
    handlers: dict[str, Callable[..., Any]] = {"input_fn": input_fn, "predict_fn": predict_fn, "output_fn": output_fn}
    saved = saved_model_dir(Path(model_dir))
    keras_file = _keras_file(Path(model_dir))
    if saved is not None:
        def model_fn(_model_dir: str) -> Any:
            import tensorflow as tf

            return tf.saved_model.load(str(saved))

        handlers["model_fn"] = model_fn
    elif keras_file is not None:
        def model_fn(_model_dir: str) -> Any:  # noqa: F811 - one of the two is defined
            import keras

            return keras.models.load_model(keras_file, safe_mode=True)

        handlers["model_fn"] = model_fn
    return handlers
