"""The ``model:`` section for ``framework: keras`` (imports no TensorFlow)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

__all__ = ["KerasModelConfig", "BUILT_IN_KEYS"]

#: The keys that configure the built-in network (they do not apply to ``class``).
BUILT_IN_KEYS = ("architecture", "conv1_filters", "conv2_filters", "dense_units", "dropout_1", "dropout_2")


class KerasModelConfig(BaseModel):
    """Which network to build and its sizes.

    ``cnn`` is the seed's Keras MNIST CNN: Conv2D ``conv1_filters`` 3×3 → Conv2D
    ``conv2_filters`` 3×3 → MaxPool 2 → Dropout ``dropout_1`` → Flatten → Dense ``dense_units``
    → Dropout ``dropout_2`` → Dense softmax. The defaults reproduce the seed's summary
    (320 / 18,496 / 1,179,776 / 1,290 parameters, 1,199,882 in total).

    ``fc`` is a fully connected net (an MLP) for tabular records (or flattened images): Dense
    ``dense_units`` → Dropout ``dropout_2`` → Dense ``dense_units`` → Dense softmax.

    Your own network: ``class: "nets.py:build"`` (a file in the use case directory) or
    ``"my_package.nets:build"`` names a function returning a ``keras.Model``; it is called with
    ``**options`` plus ``input_shape`` — channels-last ``(H, W, C)``, what ``keras.Input``
    takes — and ``num_classes`` when its signature accepts them. The model takes normalised
    ``(N, H, W, C)`` float32 and must return softmax probabilities ``(N, num_classes)``. An
    uncompiled model is compiled with the configured optimizer and sparse categorical
    cross-entropy; a compiled one keeps its optimizer and loss (``accuracy`` is added to its
    metrics). Custom layers must be registered (``keras.saving.register_keras_serializable``)
    in that file: it travels with the model and is imported before ``model.keras`` is loaded.
    The built-in keys do not mix with ``class``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    architecture: Literal["cnn", "fc"] = "cnn"
    conv1_filters: int = Field(default=32, gt=0)
    conv2_filters: int = Field(default=64, gt=0)
    dense_units: int = Field(default=128, gt=0)
    dropout_1: float = Field(default=0.25, ge=0, lt=1)
    dropout_2: float = Field(default=0.25, ge=0, lt=1)
    class_: str | None = Field(default=None, alias="class", description="'file.py:function' or 'module:function'")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the function")

    @model_validator(mode="before")
    @classmethod
    def _class_or_built_in(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("class", data.get("class_")) is not None:
            mixed = [key for key in BUILT_IN_KEYS if key in data]
            if mixed:
                raise ValueError(
                    f"{', '.join(mixed)} configure the built-in network and do not apply with 'class'; "
                    "remove them (pass your function's own arguments under 'options')"
                )
        elif "options" in data:
            raise ValueError("options apply only to your own network: set 'class' (e.g. class: 'nets.py:build') or remove them")
        return data

    @property
    def user_class(self) -> str | None:
        """The configured ``class`` spec, ``None`` for the built-in network."""
        return self.class_

    @model_serializer(mode="plain")
    def _dump(self) -> dict[str, Any]:
        """Only the keys that apply: the built-in ones, or ``class`` and ``options``."""
        if self.class_ is None:
            return {key: getattr(self, key) for key in BUILT_IN_KEYS}
        return {"class": self.class_, "options": dict(self.options)}
