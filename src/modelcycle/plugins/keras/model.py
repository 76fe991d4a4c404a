"""The Keras side of the plugin: the seed CNN, its optimizer and schedule, the ``fit`` callback
that drives modelcycle's reporter, evaluation, single training steps and the serving forward.

Data enters as raw images; it is normalised once per split with the manifest's
:class:`~modelcycle.core.artifacts.Preprocessing` (the same code the endpoint runs) and laid out
channels-last ``(N, H, W, C)``, Keras's native layout.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from modelcycle.plugins.keras.config import KerasModelConfig

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.artifacts import Preprocessing
    from modelcycle.core.config import Hyperparameters
    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.training import TrainingContext, TrainingResult

__all__ = [
    "build_network",
    "make_optimizer",
    "compile_model",
    "to_inputs",
    "ReporterCallback",
    "autolog",
    "fit",
    "evaluate",
    "train_step",
    "serving_forward",
]

#: fraction of the steps the one-cycle-like schedule spends warming up (torch's OneCycleLR default)
WARMUP_FRACTION = 0.3
#: the warm-up starts at ``learning_rate / WARMUP_DIVISOR`` (OneCycleLR's ``div_factor``)
WARMUP_DIVISOR = 25.0


def build_network(config: KerasModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The configured network for inputs of ``input_shape``: ``(C, H, W)`` images, taken as
    normalised channels-last ``(N, H, W, C)`` float32, or ``(W,)`` encoded tabular records
    (``fc`` only); it returns softmax probabilities ``(N, K)``.

    The CNN's layer names are the seed's, so the summary reads the same in every run of a process.

    Raises:
        ConfigError: ``cnn`` for tabular records.
    """
    if config.architecture == "fc" or len(input_shape) == 1:
        return build_dense_network(config, input_shape, num_classes)
    channels, height, width = input_shape
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((height, width, channels), name="image"),
            layers.Conv2D(config.conv1_filters, 3, activation="relu", name="conv2d"),
            layers.Conv2D(config.conv2_filters, 3, activation="relu", name="conv2d_1"),
            layers.MaxPooling2D(2, name="max_pooling2d"),
            layers.Dropout(config.dropout_1, name="dropout"),
            layers.Flatten(name="flatten"),
            layers.Dense(config.dense_units, activation="relu", name="dense"),
            layers.Dropout(config.dropout_2, name="dropout_1"),
            layers.Dense(num_classes, activation="softmax", name="dense_1"),
        ],
        name="cnn",
    )


def build_dense_network(config: KerasModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The ``fc`` MLP: Dense ``dense_units`` (relu) → Dropout ``dropout_2`` → Dense
    ``dense_units`` (relu) → Dense softmax, over ``(W,)`` records or flattened images.

    Raises:
        ConfigError: another architecture for tabular records (``(W,)`` inputs).
    """
    if config.architecture != "fc":
        from modelcycle.core.errors import ConfigError

        raise ConfigError(
            f"model.architecture {config.architecture} needs images, but the data set holds tabular records "
            f"({input_shape[0]} encoded columns); use architecture: fc or your own model class")
    layers = keras.layers
    if len(input_shape) == 1:
        head = [keras.Input((input_shape[0],), name="record")]
    else:
        channels, height, width = input_shape
        head = [keras.Input((height, width, channels), name="image"), layers.Flatten(name="flatten")]
    return keras.Sequential(
        [
            *head,
            layers.Dense(config.dense_units, activation="relu", name="dense"),
            layers.Dropout(config.dropout_2, name="dropout"),
            layers.Dense(config.dense_units, activation="relu", name="dense_1"),
            layers.Dense(num_classes, activation="softmax", name="dense_2"),
        ],
        name="fc",
    )


def make_optimizer(hp: Hyperparameters, steps: int) -> keras.optimizers.Optimizer:
    """Adam(learning_rate, beta_1, beta_2) or SGD(learning_rate, momentum).

    With ``lr_schedule: onecycle`` the rate follows a one-cycle-like curve over ``steps``
    optimisation steps: a linear warm-up from ``learning_rate / 25`` to ``learning_rate`` over the
    first 30 %, then a cosine decay to 0 (Keras's ``CosineDecay`` with warm-up).
    """
    learning_rate: Any = hp.learning_rate
    if hp.lr_schedule == "onecycle":
        steps = max(int(steps), 2)
        warmup = max(1, round(WARMUP_FRACTION * steps))
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=hp.learning_rate / WARMUP_DIVISOR,
            decay_steps=max(1, steps - warmup),
            alpha=0.0,
            warmup_target=hp.learning_rate,
            warmup_steps=warmup,
        )
    weight_decay = hp.weight_decay or None
    if hp.optimizer == "adam":
        return keras.optimizers.Adam(
            learning_rate=learning_rate, beta_1=hp.beta_1, beta_2=hp.beta_2, weight_decay=weight_decay
        )
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=hp.momentum, weight_decay=weight_decay)


def compile_model(model: keras.Model, hp: Hyperparameters, steps: int) -> keras.optimizers.Optimizer:
    """Compile with the configured optimizer, sparse categorical cross-entropy on the softmax
    outputs, and accuracy; returns the optimizer."""
    optimizer = make_optimizer(hp, steps)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return optimizer


def steps_per_epoch(records: int, batch_size: int) -> int:
    return max(1, math.ceil(records / batch_size))


def to_inputs(images: np.ndarray, preprocessing: Preprocessing | None) -> np.ndarray:
    """Raw uint8 images ``(N, H, W[, C])`` → normalised float32 ``(N, H, W, C)``, in one pass
    (tabular records ``(N, F)`` → encoded ``(N, W)``).

    The normalisation is ``Preprocessing.apply`` on ``(N, C, H, W)`` — the function the serving
    side applies — then a transpose to channels-last (a free reshape for one channel).
    """
    assert preprocessing is not None, "the trainer sets preprocessing before fit"
    if images.ndim == 2:  # tabular records (N, F) -> encoded (N, W)
        return np.ascontiguousarray(preprocessing.apply(images), dtype=np.float32)
    raw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    normalised = preprocessing.apply(raw.astype(np.float32))
    return np.ascontiguousarray(normalised.transpose(0, 2, 3, 1))


def to_labels(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64)


class ReporterCallback(keras.callbacks.Callback):
    """Drives ``context.reporter`` from inside ``model.fit``.

    ``on_train_batch_end`` does nothing but a modulo check except every ``log_interval`` batches,
    where it prints the seed line ``Train Epoch: 1 [6400/60000 (11%)] Loss: …``. The loss is
    the one Keras reports at that batch: the running mean of the epoch so far. At the end of an
    epoch it reads the test-split results ``fit`` computed (``val_loss``, ``val_accuracy``),
    prints the seed's ``Test set: …`` line and calls ``reporter.end_epoch`` (which broadcasts
    ``on_epoch_end``).
    """

    def __init__(self, context: TrainingContext, total: int, num_batches: int, test_total: int) -> None:
        super().__init__()
        hp = context.hyperparameters
        self._context = context
        self._reporter = context.reporter
        self._interval = hp.log_interval
        self._batch_size = hp.batch_size
        self._total = total
        self._num_batches = num_batches
        self._test_total = test_total
        self._epoch = 0
        self.last_metrics: dict[str, float] = {}

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch + 1
        self._reporter.start_epoch(self._epoch, self._num_batches)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch % self._interval == 0 and batch:
            self._reporter.batch(self._epoch, batch, self._num_batches, self._batch_size, self._total, logs["loss"])  # type: ignore[index]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        test_loss = float(logs["val_loss"])
        correct = int(round(float(logs["val_accuracy"]) * self._test_total))
        self._reporter.test_result(test_loss, correct, self._test_total)
        self.last_metrics = {
            "train_loss": float(logs["loss"]),
            "test_loss": test_loss,
            "test_accuracy": correct / self._test_total,
        }
        self._reporter.end_epoch(self._epoch, dict(self.last_metrics), self._context)
        self._context.save_checkpoint(self.model, self._epoch)


@contextmanager
def autolog(context: TrainingContext) -> Iterator[None]:
    """MLflow's Keras 3 autologging for the duration of ``fit`` — only with ``capture: autolog``
    and an active MLflow run; with ``capture: manual`` MLflow is not even imported.

    ``mlflow.keras.autolog`` is MLflow's Keras 3 integration (it patches ``keras.Model.fit``;
    ``mlflow.tensorflow.autolog`` targets ``tf.keras`` 2.x). Models are not logged: the artifact
    is modelcycle's. If the user already enabled Keras autologging themselves, it is left as is.
    """
    if context.config.capture != "autolog":
        yield
        return
    import mlflow
    from mlflow.utils.autologging_utils import autologging_is_disabled

    if mlflow.active_run() is None or not autologging_is_disabled("keras"):
        yield
        return
    mlflow.keras.autolog(log_models=False, silent=True)
    try:
        yield
    finally:
        mlflow.keras.autolog(disable=True, silent=True)


def fit(model: keras.Model, dataset: Dataset, context: TrainingContext) -> TrainingResult:
    """``model.fit`` on the whole train split (normalised once), evaluating on the test split at
    each epoch's end, with :class:`ReporterCallback` driving the reporter.

    Keras runs its own compiled train step here (one traced function for every batch, far
    faster than calling the ``train_step`` hook per batch); :func:`train_step` is the hook for
    single steps (conformance suite, user code).
    """
    from modelcycle.core.training import TrainingResult

    hp, reporter = context.hyperparameters, context.reporter
    keras.utils.set_random_seed(hp.seed)  # shuffling and dropout masks
    x_train = to_inputs(dataset.train.images, context.preprocessing)
    y_train = to_labels(dataset.train.labels)
    x_test = to_inputs(dataset.test.images, context.preprocessing)
    y_test = to_labels(dataset.test.labels)
    total = len(x_train)
    callback = ReporterCallback(context, total, steps_per_epoch(total, hp.batch_size), len(x_test))
    start = context.start_epoch(model)  # a resumed run: weights, optimizer (and its schedule step), dropout seeds
    with autolog(context):
        if start <= hp.epochs:
            model.fit(
                x_train,
                y_train,
                batch_size=hp.batch_size,
                epochs=hp.epochs,
                initial_epoch=start - 1,
                shuffle=True,
                verbose=0,
                validation_data=(x_test, y_test),
                validation_batch_size=hp.test_batch_size,
                callbacks=[callback],
            )
    metrics = dict(callback.last_metrics) or reporter.last_metrics()
    return TrainingResult(run_id=context.run_id, metrics=metrics, history=list(reporter.history))


CHECKPOINT_WEIGHTS = "checkpoint.weights.h5"
CHECKPOINT_SEEDS = "seed_states.npz"


def _seed_generators(model: keras.Model) -> dict[str, Any]:
    return {layer.name: layer.seed_generator for layer in model.layers if getattr(layer, "seed_generator", None) is not None}


def save_checkpoint(model: keras.Model, directory: Any) -> list[str]:
    """The weights with the optimizer's variables (its step drives the schedule) as
    ``.weights.h5``, and the dropout layers' seed-generator states (``.npz``, no pickle).

    The data order is not restored: Keras reshuffles with TensorFlow's stateful op seeds, so a
    resumed run sees other (equally random) batches than an uninterrupted one would."""
    from pathlib import Path

    model.save_weights(Path(directory) / CHECKPOINT_WEIGHTS)
    seeds = {name: np.asarray(generator.state.numpy()) for name, generator in _seed_generators(model).items()}
    np.savez(Path(directory) / CHECKPOINT_SEEDS, **seeds)
    return [CHECKPOINT_WEIGHTS, CHECKPOINT_SEEDS]


def load_checkpoint(model: keras.Model, directory: Any) -> bool:
    """Restore what :func:`save_checkpoint` wrote (the optimizer is built first, so its
    variables load too)."""
    from pathlib import Path

    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(directory) / CHECKPOINT_WEIGHTS)
    with np.load(Path(directory) / CHECKPOINT_SEEDS, allow_pickle=False) as seeds:
        for name, generator in _seed_generators(model).items():
            if name in seeds.files:
                generator.state.assign(seeds[name])
    return True


def evaluate(model: keras.Model, split: Split, context: TrainingContext) -> dict[str, float]:
    """Average loss and accuracy on a raw split (normalised here)."""
    x = to_inputs(split.images, context.preprocessing)
    y = to_labels(split.labels)
    result = model.evaluate(x, y, batch_size=context.hyperparameters.test_batch_size, verbose=0, return_dict=True)
    total = len(y)
    correct = int(round(float(result["accuracy"]) * total))
    return {"loss": float(result["loss"]), "accuracy": correct / total, "correct": float(correct), "total": float(total)}


def train_step(model: keras.Model, batch: Any, context: TrainingContext) -> float:
    """One optimisation step on ``batch = (inputs, labels)`` with ``model.train_on_batch``;
    returns that batch's loss.

    ``inputs`` are normalised float32 images, channels-last ``(N, H, W, C)`` as the model takes
    them; channels-first ``(N, C, H, W)`` (the other frameworks' layout) is transposed.
    """
    inputs, targets = batch
    x = np.asarray(inputs, dtype=np.float32)
    channels, height, width = context.input_shape
    if x.ndim == 4 and x.shape[1:] == (channels, height, width) and x.shape[1:] != (height, width, channels):
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    logs = model.train_on_batch(x, to_labels(np.asarray(targets)), return_dict=True)
    return float(logs["loss"])


_FORWARDS: weakref.WeakKeyDictionary[keras.Model, Any] = weakref.WeakKeyDictionary()


def serving_forward(model: keras.Model) -> Any:
    """``model(x, training=False)`` traced once as a ``tf.function`` for any batch size.

    Called eagerly, a Keras model costs milliseconds of Python per request even for one image;
    the traced function runs the same call as one graph. The function holds the model weakly
    and is cached per model.
    """
    forward = _FORWARDS.get(model)
    if forward is None:
        ref = weakref.ref(model)

        @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)])
        def forward(x: tf.Tensor) -> tf.Tensor:
            return ref()(x, training=False)  # type: ignore[misc]

        forward.get_concrete_function()  # trace now, not on the first request
        _FORWARDS[model] = forward
    return forward
