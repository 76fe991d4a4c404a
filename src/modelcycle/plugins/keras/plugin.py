"""Hook implementations of the Keras framework plugin.

The model is saved twice: ``model.keras`` (Keras 3's native format, what ``model_fn`` loads, with
``safe_mode=True`` so no serialized lambda is ever executed) and a TensorFlow-Serving style
SavedModel under ``model/1/`` (``model.export``), the layout SageMaker's TensorFlow inference
container serves directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.errors import ArtifactError
from modelcycle.core.markers import hookimpl
from modelcycle.core.plugin_types import FrameworkInfo, require_modules
from modelcycle.lib.examples import packaged_example_files, packaged_examples
from modelcycle.plugins.keras.config import KerasModelConfig

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import numpy as np

    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.serving.context import ServingContext
    from modelcycle.core.training import TrainingContext, TrainingResult

log = logging.getLogger(__name__)

# Keras and TensorFlow are imported by the hooks that use them (through .model): loading the
# plugin to read framework_info or validate ``model:`` (a script-mode run's parent) stays light.
# A missing library still fails here, when the plugin loads, naming the extra to install.
require_modules("keras", "tensorflow")

MODEL_FILE = "model.keras"
#: TensorFlow Serving layout: ``<model_dir>/model/<version>/saved_model.pb``
SAVED_MODEL_DIR = "model/1"


@hookimpl
def framework_info() -> FrameworkInfo:
    """modelcycle's ``keras`` extra; TensorFlow comes as ``tensorflow`` or ``tensorflow-cpu``
    (whichever is installed is recorded). Single-host training."""
    return FrameworkInfo(
        distribution="modelcycle",
        extras=("keras",),
        libraries=("keras", "tensorflow", "tensorflow-cpu"),
        examples=packaged_examples("keras"),
        example_files=packaged_example_files("keras"),
    )


@hookimpl
def model_config_class() -> type:
    return KerasModelConfig


@hookimpl
def build_model(model_config: KerasModelConfig, dataset: Dataset, context: TrainingContext) -> keras.Model:
    """Build and compile the configured network, seeded so initial weights are reproducible.

    With ``class`` the user's function is called, its model checked on two real training
    records and compiled unless it already is (:mod:`.user_model`); its code is recorded in
    ``context.user_code`` for the model directory."""
    import keras

    from modelcycle.plugins.keras import model as km
    from modelcycle.plugins.keras.user_model import build_user_model, ensure_compiled

    hp = context.hyperparameters
    keras.utils.set_random_seed(hp.seed)
    steps = hp.epochs * km.steps_per_epoch(len(dataset.train), hp.batch_size)
    if model_config.user_class is None:
        model = km.build_network(model_config, context.input_shape, len(dataset.classes))
        context.state["optimizer"] = km.compile_model(model, hp, steps)
        return model
    sample = km.to_inputs(dataset.train.images[:2], context.preprocessing)
    code, model = build_user_model(model_config, context.source_dir, context.input_shape, len(dataset.classes), sample)
    context.user_code = code
    context.state["optimizer"] = ensure_compiled(model, lambda m: km.compile_model(m, hp, steps))
    return model


@hookimpl
def summarize_model(model: keras.Model, context: TrainingContext) -> str:
    """Keras's own summary table (layers, output shapes, parameter counts)."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, line_break=True: lines.append(text))
    return "\n".join(line.rstrip("\n") for line in lines)


@hookimpl
def train_step(model: keras.Model, batch: Any, context: TrainingContext) -> float:
    from modelcycle.plugins.keras import model as km

    return km.train_step(model, batch, context)


@hookimpl
def fit(model: keras.Model, dataset: Dataset, context: TrainingContext) -> TrainingResult:
    from modelcycle.plugins.keras import model as km

    return km.fit(model, dataset, context)


@hookimpl
def evaluate(model: keras.Model, split: Split, context: TrainingContext) -> dict[str, float]:
    from modelcycle.plugins.keras import model as km

    return km.evaluate(model, split, context)


@hookimpl
def save_model(model: keras.Model, model_dir: Path, context: TrainingContext) -> list[str]:
    model_dir = Path(model_dir)
    model.save(model_dir / MODEL_FILE)
    model.export(str(model_dir / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
    return [MODEL_FILE, SAVED_MODEL_DIR]


@hookimpl
def save_checkpoint(model: keras.Model, directory: Path, context: TrainingContext) -> list[str]:
    from modelcycle.plugins.keras import model as km

    return km.save_checkpoint(model, directory)


@hookimpl
def load_checkpoint(model: keras.Model, directory: Path, context: TrainingContext) -> bool:
    from modelcycle.plugins.keras import model as km

    return km.load_checkpoint(model, directory)


def _set_threads(threads: int) -> None:
    """Intra- and inter-op threads; TF accepts them only before its runtime starts."""
    import tensorflow as tf

    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() == threads and threading.get_inter_op_parallelism_threads() == threads:
        return
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:  # the runtime already runs in this process (in-process use)
        log.info("keeping TensorFlow's thread settings (%s)", exc)


@hookimpl
def model_fn(model_dir: Path, context: ServingContext) -> keras.Model:
    """Load ``model.keras`` safely and trace its forward once for any batch size (a user
    model's file is imported first from the model directory's ``code/user/``)."""
    import keras

    from modelcycle.plugins.keras import model as km

    threads = os.environ.get("MODELCYCLE_SERVING_THREADS")
    if threads:
        _set_threads(int(threads))
    path = Path(model_dir) / MODEL_FILE
    if context.manifest.user_code:  # registers the user's custom layers, from the model's own copy
        from modelcycle.core.user_code import load_packaged_code

        load_packaged_code(Path(model_dir), context.manifest.user_code)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile/h5 errors, TypeError
        raise ArtifactError(
            f"cannot load {MODEL_FILE} from {model_dir}: {exc}. It must be a Keras 3 model saved by "
            "modelcycle's keras plugin (unsafe deserialisation is refused)"
        ) from exc
    schema = context.manifest.input_schema
    if schema.kind == "tabular":
        expected, described = (context.manifest.preprocessing.input_width,), "tabular records, encoded"
    else:
        channels, height, width = schema.shape
        expected, described = (height, width, channels), f"{tuple(schema.shape)} (C, H, W), i.e. channels-last"
    if tuple(model.input_shape[1:]) != expected:
        raise ArtifactError(
            f"{path} takes inputs of shape {model.input_shape[1:]}, but the manifest's input schema "
            f"is {described} {expected}"
        )
    km.serving_forward(model)
    return model


@hookimpl
def predict_fn(data: np.ndarray, model: keras.Model, context: ServingContext) -> np.ndarray:
    """Normalise raw ``(N, C, H, W)`` pixels as in training, go channels-last (or encode raw
    tabular records ``(N, F)``), and return the softmax probabilities ``(N, K)`` of
    ``model(x, training=False)``."""
    import numpy as np

    from modelcycle.plugins.keras import model as km

    normalised = context.normalize(data)
    inputs = np.ascontiguousarray(normalised if normalised.ndim == 2 else normalised.transpose(0, 2, 3, 1),
                                  dtype=np.float32)
    return km.serving_forward(model)(inputs).numpy()


@hookimpl
def script_handler_defaults(model_dir: Path) -> dict[str, Any]:
    """TensorFlow Serving's conventions for a script-mode model (:mod:`.script_defaults`)."""
    from modelcycle.plugins.keras.script_defaults import default_handlers

    return default_handlers(model_dir)
