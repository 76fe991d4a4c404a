"""Hooks of the ``sklearn-mlp`` framework adapter.

Weights are saved as plain arrays (``mlp.npz``, loaded with ``allow_pickle=False``) and served by
a numpy forward pass, so no pickle is ever loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.neural_network import MLPClassifier

from modelcycle import hookimpl
from modelcycle.core.plugin_types import FrameworkInfo

WEIGHTS = "mlp.npz"


class MLPConfig(BaseModel):
    """The ``model:`` section: one hidden layer of ``hidden_units`` ReLUs, L2 penalty ``alpha``."""

    model_config = ConfigDict(extra="forbid")

    hidden_units: int = Field(default=64, gt=0)
    alpha: float = Field(default=1e-4, ge=0)


@dataclass
class NumpyMLP:
    """The served model: ReLU hidden layers, softmax output."""

    coefs: list[np.ndarray]
    intercepts: list[np.ndarray]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        for coef, intercept in zip(self.coefs[:-1], self.intercepts[:-1]):
            x = np.maximum(x @ coef + intercept, 0.0)
        logits = x @ self.coefs[-1] + self.intercepts[-1]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def _features(images: np.ndarray, context: Any) -> np.ndarray:
    raw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return context.preprocessing.apply(raw.astype(np.float32)).reshape(len(images), -1)


@hookimpl
def framework_info() -> FrameworkInfo:
    """This distribution (pinned in every model archive's requirements) and the libraries it
    trains and serves with; no example configs, so ``modelcycle init`` writes the generic one."""
    return FrameworkInfo(
        distribution="modelcycle-example-adapter",
        libraries=("scikit-learn", "numpy"),
        # MLPClassifier steps with its own Adam schedule: these shared settings do not apply
        ignored_hyperparameters=("optimizer", "lr_schedule", "momentum", "beta_1", "beta_2", "weight_decay",
                                 "test_batch_size"),
    )


@hookimpl
def model_config_class() -> type:
    return MLPConfig


@hookimpl
def build_model(model_config: MLPConfig, dataset: Any, context: Any) -> MLPClassifier:
    hp = context.hyperparameters
    return MLPClassifier(
        hidden_layer_sizes=(model_config.hidden_units,),
        alpha=model_config.alpha,
        learning_rate_init=min(hp.learning_rate, 0.01),
        batch_size=hp.batch_size,
        random_state=hp.seed,
    )


@hookimpl
def train_step(model: MLPClassifier, batch: tuple[np.ndarray, np.ndarray], context: Any) -> float:
    features, labels = batch
    model.partial_fit(features, labels, classes=context.state["classes"])
    return float(model.loss_)


@hookimpl
def evaluate(model: Any, split: Any, context: Any) -> dict[str, float]:
    probabilities = model.predict_proba(_features(split.images, context))
    labels = split.labels.astype(np.int64)
    picked = probabilities[np.arange(len(labels)), labels]
    correct = int((probabilities.argmax(1) == labels).sum())
    return {
        "loss": float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()),
        "accuracy": correct / len(labels),
        "correct": float(correct),
        "total": float(len(labels)),
    }


@hookimpl
def fit(model: MLPClassifier, dataset: Any, context: Any) -> Any:
    from modelcycle.core.training import TrainingResult

    hp, reporter = context.hyperparameters, context.reporter
    features, labels = _features(dataset.train.images, context), dataset.train.labels.astype(np.int64)
    context.state["classes"] = np.arange(len(dataset.classes))
    rng = np.random.default_rng(hp.seed)
    num_batches = (len(features) + hp.batch_size - 1) // hp.batch_size
    metrics: dict[str, float] = {}
    for epoch in range(1, hp.epochs + 1):
        reporter.start_epoch(epoch, num_batches)
        order = rng.permutation(len(features))
        losses = []
        for index in range(num_batches):
            rows = order[index * hp.batch_size : (index + 1) * hp.batch_size]
            losses.append(context.hook.train_step(model=model, batch=(features[rows], labels[rows]), context=context))
            if index % hp.log_interval == 0 and index:
                reporter.batch(epoch, index, num_batches, hp.batch_size, len(features), losses[-1])
        test = evaluate(model, dataset.test, context)
        reporter.test_result(test["loss"], int(test["correct"]), int(test["total"]))
        metrics = {"train_loss": float(np.mean(losses)), "test_loss": test["loss"], "test_accuracy": test["accuracy"]}
        reporter.end_epoch(epoch, metrics, context)
    return TrainingResult(run_id=context.run_id, metrics=metrics, history=list(reporter.history))


@hookimpl
def save_model(model: MLPClassifier, model_dir: Path, context: Any) -> list[str]:
    arrays = {f"coef_{i}": c for i, c in enumerate(model.coefs_)}
    arrays |= {f"intercept_{i}": b for i, b in enumerate(model.intercepts_)}
    np.savez(Path(model_dir) / WEIGHTS, **arrays)
    return [WEIGHTS]


@hookimpl
def summarize_model(model: MLPClassifier, context: Any) -> str:
    return f"MLPClassifier(hidden_layer_sizes={model.hidden_layer_sizes}, alpha={model.alpha})"


@hookimpl
def model_fn(model_dir: Path, context: Any) -> NumpyMLP:
    with np.load(Path(model_dir) / WEIGHTS, allow_pickle=False) as data:
        layers = len([name for name in data.files if name.startswith("coef_")])
        return NumpyMLP([data[f"coef_{i}"] for i in range(layers)], [data[f"intercept_{i}"] for i in range(layers)])


@hookimpl
def predict_fn(data: np.ndarray, model: Any, context: Any) -> np.ndarray:
    features = context.normalize(data).reshape(len(data), -1)
    return np.asarray(model.predict_proba(features), dtype=np.float32)
