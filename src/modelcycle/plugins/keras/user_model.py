"""A user's own Keras model (``model: {class: "nets.py:build"}``): a function returning a
``keras.Model``, called, checked on two real records, and compiled unless it already is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from modelcycle.core.user_code import UserCode, UserCodeError, construct, load_user_code

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.plugins.keras.config import KerasModelConfig

__all__ = ["build_user_model", "check_output", "ensure_compiled"]

#: how far a row of the output may sum from 1 and still count as probabilities
_TOLERANCE = 1e-3


def check_output(model: keras.Model, sample: np.ndarray, num_classes: int, where: str) -> None:
    """One forward (``training=False``) on ``sample`` (2 real normalised channels-last records):
    the output must be probabilities of shape ``(len(sample), num_classes)``.

    Raises:
        UserCodeError: the call raised, or the output has another shape or is not probabilities.
    """
    try:
        out = np.asarray(model(sample, training=False))
    except Exception as exc:  # noqa: BLE001 - the user's model failed: say on what
        raise UserCodeError(
            f"model.class {where}: calling the model on {len(sample)} training records of shape {sample.shape} "
            f"(N, H, W, C) raised {type(exc).__name__}: {exc}; give it keras.Input(shape=input_shape)"
        ) from None
    expected = (len(sample), num_classes)
    if out.shape != expected:
        raise UserCodeError(
            f"model.class {where}: the model must return shape {expected} (N, num_classes) for {len(sample)} "
            f"records, got {out.shape}; size the last Dense layer with the num_classes argument"
        )
    if (out < 0).any() or (out > 1).any() or not np.allclose(out.sum(axis=1), 1.0, atol=_TOLERANCE):
        raise UserCodeError(
            f"model.class {where}: the model must return class probabilities (rows summing to 1), got rows "
            f"summing to {np.round(out.sum(axis=1), 4).tolist()}; end it with Dense(num_classes, activation='softmax')"
        )


def ensure_compiled(model: keras.Model, compile_default: Any) -> keras.optimizers.Optimizer:
    """Compile an uncompiled model with ``compile_default(model)`` (the configured optimizer);
    a compiled one keeps its optimizer and loss and gets ``accuracy`` (the reporter reads it).
    Returns the optimizer."""
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        return compile_default(model)
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    return model.optimizer


def build_user_model(config: KerasModelConfig, source_dir: Path | None, input_shape: tuple[int, ...],
                     num_classes: int, sample: np.ndarray) -> tuple[UserCode, keras.Model]:
    """Load and call ``config.class`` with channels-last ``input_shape`` ``(H, W, C)`` (from
    the ``(C, H, W)`` given; tabular records: ``(W,)``, the encoded width), check the result is a ``keras.Model`` mapping ``sample`` to
    probabilities ``(2, num_classes)``; returns the code and the (uncompiled or user-compiled) model.

    Raises:
        UserCodeError: any of those steps failed (names the file and the fix).
    """
    assert config.user_class is not None
    code = load_user_code(config.user_class, source_dir or Path.cwd())
    channels_last = input_shape if len(input_shape) == 1 else (*input_shape[1:], input_shape[0])
    model = construct(code, config.options, tuple(channels_last), num_classes)
    if not isinstance(model, keras.Model):
        raise UserCodeError(
            f"model.class {code.where} returned a {type(model).__name__}, not a keras.Model; return the model "
            "(keras.Sequential, the functional API or a keras.Model subclass)"
        )
    check_output(model, sample, num_classes, code.where)
    return code, model
