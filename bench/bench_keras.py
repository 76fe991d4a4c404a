"""One Keras epoch through modelcycle's keras plugin ``fit`` vs a plain ``model.fit(verbose=0)``.

Both train the seed's Keras CNN (1,199,882 parameters, built and compiled by the plugin's
``build_model`` hook, so the model, optimizer and seed are the same) on the full MNIST training
set (batch 128, Adam 1e-3, constant learning rate) for one epoch, evaluating on the 10,000 test
images at the epoch's end (``validation_data``); both normalise the raw images once inside the
timing. The only differences are modelcycle's: the reporter-driving callback (quiet reporter) and
the hook calls. Both sides seed Keras alike (``keras.utils.set_random_seed(seed)`` before
``fit``: shuffling and dropout). The order of the sides alternates round by round (A B, B A, …)
after one warm-up each, so machine drift hits both alike. ``run`` returns the raw per-round
lists: ``{"rounds", "seed", "modelcycle_s", "plain_s", "modelcycle_accuracy", "plain_accuracy"}``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet_context  # noqa: E402
from compare import alternate  # noqa: E402

from modelcycle.core.config import Hyperparameters, UseCaseConfig  # noqa: E402
from modelcycle.core.registry import PluginRegistry  # noqa: E402
from modelcycle.core.training import TrainingContext, load_training_data  # noqa: E402

BATCH_SIZE = 128


def _config() -> UseCaseConfig:
    hp = Hyperparameters(epochs=1, batch_size=BATCH_SIZE, learning_rate=1e-3, lr_schedule="constant", log_interval=50)
    return UseCaseConfig(name="bench-keras", framework="keras", hyperparameters=hp)


def _context(registry: PluginRegistry, config: UseCaseConfig) -> tuple[Any, Any]:
    return quiet_context(registry, config)


def _model(registry: PluginRegistry, context: TrainingContext, dataset: Any) -> Any:
    return registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)


def modelcycle_epoch(registry: PluginRegistry, config: UseCaseConfig, out: dict[str, Any]) -> float:
    """Seconds for the plugin's ``fit`` (normalise, 1 epoch, test evaluation, reporter callback)."""
    context, dataset = _context(registry, config)
    model = _model(registry, context, dataset)
    started = time.perf_counter()
    result = registry.call_first("fit", model=model, dataset=dataset, context=context)
    seconds = time.perf_counter() - started
    out.setdefault("modelcycle_accuracy", []).append(result.metrics["test_accuracy"])
    return seconds


def _normalise(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((images.astype(np.float32) / 255.0 - mean) / std)[..., None]


def plain_epoch(registry: PluginRegistry, config: UseCaseConfig, out: dict[str, Any]) -> float:
    """Seconds for a plain ``model.fit(verbose=0)`` of the same compiled model on the same data."""
    import keras

    context, dataset = _context(registry, config)
    model = _model(registry, context, dataset)
    prep = context.preprocessing
    assert prep is not None
    mean, std = prep.mean[0], prep.std[0]
    keras.utils.set_random_seed(config.hyperparameters.seed)
    started = time.perf_counter()
    x_train = _normalise(dataset.train.images, mean, std)
    x_test = _normalise(dataset.test.images, mean, std)
    history = model.fit(
        x_train, dataset.train.labels, batch_size=BATCH_SIZE, epochs=1, shuffle=True, verbose=0,
        validation_data=(x_test, dataset.test.labels), validation_batch_size=config.hyperparameters.test_batch_size,
    )
    seconds = time.perf_counter() - started
    out.setdefault("plain_accuracy", []).append(float(history.history["val_accuracy"][-1]))
    return seconds


def run(rounds: int = 5) -> dict[str, Any]:
    config = _config()
    registry = PluginRegistry()
    registry.load_framework("keras")
    load_training_data(config)  # warm the dataset cache outside the timing
    out: dict[str, Any] = {}
    warmup = {"modelcycle_s": modelcycle_epoch(registry, config, {}), "plain_s": plain_epoch(registry, config, {})}
    mc, plain = alternate(lambda: modelcycle_epoch(registry, config, out), lambda: plain_epoch(registry, config, out), rounds)
    return {
        "rounds": rounds, "seed": config.hyperparameters.seed, "modelcycle_s": mc, "plain_s": plain, "warmup": warmup,
        "modelcycle_accuracy": out["modelcycle_accuracy"], "plain_accuracy": out["plain_accuracy"],
    }


if __name__ == "__main__":
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    print(result)
