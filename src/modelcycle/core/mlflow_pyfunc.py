"""The pyfunc MLflow serves a modelcycle model with: the endpoint's own inference pipeline.

``mlflow.pyfunc.load_model`` (or ``mlflow models serve``) unpickles :class:`ModelcyclePythonModel`,
whose ``load_context`` builds modelcycle's :class:`~modelcycle.core.serving.pipeline.InferencePipeline`
over the model directory logged as the artifact ``model_dir``: the files are checked against the
manifest, the framework plugin loads the weights, and ``predict`` applies the manifest's
preprocessing to raw inputs exactly as the endpoint does.

Inputs (raw, as clients send them to the endpoint):

* an image model takes 0-255 pixels as an array ``(N, H, W)`` (one channel), ``(N, H, W, C)``,
  ``(N, C, H, W)`` or ``(N, C·H·W)`` — the logged signature declares ``(N, H, W)`` for one
  channel and ``(N, H, W, C)`` otherwise, which is what MLflow's schema enforcement admits;
* a tabular model takes a DataFrame with one column per field of the manifest's input schema
  (categorical fields as their category text).

The output is a DataFrame with one row per input: ``prediction`` (the class index),
``prediction_label`` (only when the data set names its classes) and ``probability`` (the class
probabilities), the endpoint's JSON fields. A bad input raises an ``MlflowException`` with
``INVALID_PARAMETER_VALUE`` (HTTP 400 from ``mlflow models serve``) carrying the endpoint's message.

This module imports MLflow at import time: only the model logger and MLflow itself import it.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np

__all__ = ["ModelcyclePythonModel", "MODEL_DIR_ARTIFACT", "MODEL_CODE"]

#: The name of the artifact holding the modelcycle model directory.
MODEL_DIR_ARTIFACT = "model_dir"
#: The model code logged with the model (MLflow's "models from code": nothing is pickled).
MODEL_CODE = """\
from mlflow.models import set_model

from modelcycle.core.mlflow_pyfunc import ModelcyclePythonModel

set_model(ModelcyclePythonModel())
"""


class ModelcyclePythonModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A modelcycle model directory served through MLflow's pyfunc interface (see the module)."""

    #: the logged signature is the schema: MLflow's type-hint validation of ``predict`` stays off
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from modelcycle.core.serving.pipeline import InferencePipeline

        self.pipeline = InferencePipeline(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """Raw inputs → one row per input with ``prediction`` and ``probability``.

        Not annotated: MLflow reads ``predict``'s type hints as a schema, the signature is it."""
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from modelcycle.core.errors import ServingError
        from modelcycle.core.serving.codecs import class_names

        try:
            raw = self._raw_input(model_input)
        except ServingError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        probabilities = np.asarray(self.pipeline.predict(raw), dtype=np.float32)
        labels = probabilities.argmax(axis=1)
        frame: dict[str, Any] = {"prediction": labels.astype(np.int64)}
        names = class_names(self.pipeline.manifest.classes)
        if names is not None and len(names) == probabilities.shape[1]:
            frame["prediction_label"] = [names[i] for i in labels]
        frame["probability"] = [row.tolist() for row in probabilities]
        return pd.DataFrame(frame)

    def _raw_input(self, model_input: Any) -> np.ndarray:
        """The raw ``(N, C, H, W)`` pixels or ``(N, F)`` records, checked as the endpoint checks them."""
        from modelcycle.core.serving.codecs import conform_input
        from modelcycle.core.serving.tabular import records_from_document

        schema = self.pipeline.manifest.input_schema
        if schema.kind == "tabular" and hasattr(model_input, "to_dict"):
            records = model_input.to_dict(orient="records")
            return records_from_document({"instances": [_plain(record) for record in records]}, schema)
        if hasattr(model_input, "to_numpy"):  # a DataFrame of pixel columns
            model_input = model_input.to_numpy()
        return conform_input(np.asarray(model_input, dtype=np.float32), schema)


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars → Python numbers (the tabular decoder takes JSON values)."""
    return {key: value.item() if isinstance(value, np.generic) else value for key, value in record.items()}
