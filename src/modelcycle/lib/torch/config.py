"""The ``model:`` section of the torch frameworks (``pytorch``, ``lightning``); imports no torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

__all__ = ["PytorchModelConfig", "BUILT_IN_KEYS"]

#: The keys that configure a built-in network (they do not apply to ``class``).
BUILT_IN_KEYS = (
    "architecture", "hidden_channels", "kernel_size", "fc_size", "dropout", "conv_dropout", "hidden_size",
)
_USER_KEYS = ("class", "options", "output")


class PytorchModelConfig(BaseModel):
    """Which network to build and its sizes.

    Built-in networks: ``cnn`` is the seeds' ConvNet (``hidden_channels`` is the seed 004 sweep
    parameter; ``dropout`` applies to its fc layer, ``conv_dropout`` — channel dropout — to its
    second conv), ``fc`` the fully connected net (``hidden_size``), ``cifar`` the CIFAR-10
    tutorial CNN; they return log-probabilities.

    Your own network: ``class: "nets.py:MyNet"`` (a file in the use case directory) or
    ``"my_package.nets:MyNet"`` (an installed module), constructed with ``**options`` plus
    ``input_shape`` ``(C, H, W)`` and ``num_classes`` when its signature accepts them.
    ``output`` says what its ``forward`` returns: ``logits`` (the default; trained with
    cross-entropy, served through softmax), ``log_probs`` (NLL; served through ``exp``) or
    ``probs`` (NLL on their log; served as they are). The built-in keys do not mix with ``class``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    architecture: Literal["cnn", "fc", "cifar"] = "cnn"
    hidden_channels: int = Field(default=20, gt=0)
    kernel_size: int = Field(default=5, gt=0)
    fc_size: int = Field(default=50, gt=0)
    dropout: float = Field(default=0.5, ge=0, lt=1)
    conv_dropout: float = Field(default=0.5, ge=0, lt=1, description="cnn: Dropout2d after the second conv")
    hidden_size: int = Field(default=64, gt=0)
    class_: str | None = Field(default=None, alias="class", description="'file.py:Name' or 'module:Name'")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the class")
    output: Literal["logits", "log_probs", "probs"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _class_or_built_in(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        has_class = data.get("class", data.get("class_")) is not None
        if has_class:
            mixed = [key for key in BUILT_IN_KEYS if key in data]
            if mixed:
                raise ValueError(
                    f"{', '.join(mixed)} configure a built-in network and do not apply with 'class'; "
                    "remove them (pass your network's own arguments under 'options')"
                )
        else:
            mixed = [key for key in ("options", "output") if key in data]
            if mixed:
                raise ValueError(
                    f"{', '.join(mixed)} apply only to your own network: set 'class' (e.g. class: "
                    "'nets.py:MyNet') or remove them"
                )
        return data

    @property
    def user_class(self) -> str | None:
        """The configured ``class`` spec, ``None`` for a built-in network."""
        return self.class_

    @property
    def effective_output(self) -> str:
        """What the network returns: the built-ins return ``log_probs``; a user class ``output``
        (default ``logits``)."""
        if self.class_ is None:
            return "log_probs"
        return self.output or "logits"

    @model_serializer(mode="plain")
    def _dump(self) -> dict[str, Any]:
        """Only the keys that apply: the built-in ones, or ``class``/``options``/``output``."""
        if self.class_ is None:
            return {key: getattr(self, key) for key in BUILT_IN_KEYS}
        return {"class": self.class_, "options": dict(self.options), "output": self.effective_output}
