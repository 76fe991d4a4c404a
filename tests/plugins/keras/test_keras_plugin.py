"""The Keras plugin on real MNIST slices: the seed CNN, fit and its log lines, single steps,
artifacts and serving, MLflow autolog, and (slow) the whole CLI lifecycle on full MNIST."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelcycle.core.config import Hyperparameters, UseCaseConfig
from conftest import write_use_case
from modelcycle.core.markers import hookimpl
from modelcycle.core.registry import REQUIRED_FRAMEWORK_HOOKS, PluginRegistry
from modelcycle.core.training import TrainingContext, TrainingReporter, dataset_input_shape, load_training_data

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "src" / "modelcycle" / "examples" / "mnist-keras" / "modelcycle.yaml"
SEED_PARAMS = ("320", "18,496", "1,179,776", "1,290")


def write_keras_use_case(directory: Path, **sections: Any) -> Path:
    """The packaged mnist-keras example in ``directory`` with ``sections`` merged in."""
    return write_use_case(directory, example="mnist-keras", **sections)


SMALL = {
    "data": {"dataset": "mnist", "train_limit": 2000, "test_limit": 500},
    "hyperparameters": {"epochs": 1, "log_interval": 5},
}


def _registry() -> PluginRegistry:
    registry = PluginRegistry()
    registry.load_framework("keras")
    return registry


def _context(
    stream: io.StringIO | None = None, train_limit: int = 2000, test_limit: int = 500, capture: str = "manual",
    registry: PluginRegistry | None = None, **hyperparameters: Any,
) -> tuple[TrainingContext, Any, PluginRegistry]:
    from modelcycle.plugins.keras.config import KerasModelConfig

    config = UseCaseConfig(
        name="t", framework="keras", capture=capture,  # type: ignore[arg-type]
        data={"dataset": "mnist", "train_limit": train_limit, "test_limit": test_limit},  # type: ignore[arg-type]
        hyperparameters=Hyperparameters(**{"epochs": 1, "batch_size": 128, "log_interval": 5, **hyperparameters}),
    )
    registry = registry or _registry()
    dataset, preprocessing = load_training_data(config)
    context = TrainingContext(
        config=config, model_config=KerasModelConfig(), registry=registry,
        reporter=TrainingReporter(registry.hook, stream=stream or io.StringIO(), progress=False),
        run_id="r", output_dir=Path("/nonexistent"), preprocessing=preprocessing,
        input_shape=dataset_input_shape(dataset),
    )
    return context, dataset, registry


def _build(context: TrainingContext, dataset: Any) -> Any:
    return context.registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)


def _weights(model: Any) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


# -- plugin shape and the network ------------------------------------------------------------
def test_registry_loads_keras_with_every_required_hook() -> None:
    from modelcycle.plugins.keras.config import KerasModelConfig

    registry = _registry()
    plugin = registry.pm.get_plugin("keras")
    implemented = {caller.name for caller in registry.pm.get_hookcallers(plugin) or []}
    assert REQUIRED_FRAMEWORK_HOOKS <= implemented, REQUIRED_FRAMEWORK_HOOKS - implemented
    assert {"model_config_class", "summarize_model"} <= implemented
    assert registry.pm.hook.model_config_class() is KerasModelConfig
    example = yaml.safe_load(EXAMPLE.read_text())
    assert example["framework"] == "keras" and example["hyperparameters"]["batch_size"] == 128
    KerasModelConfig.model_validate(example["model"])
    with pytest.raises(Exception, match="hidden_channels"):
        KerasModelConfig.model_validate({"hidden_channels": 20})  # a pytorch option is refused


def test_config_and_cli_import_no_tensorflow() -> None:
    code = (
        "import sys, modelcycle, modelcycle.cli, modelcycle.core.lifecycle, modelcycle.plugins.keras.config\n"
        "modelcycle.cli.build_parser()\n"
        "loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_summary_shows_the_seed_cnn_parameter_counts(data_dir: Path) -> None:
    context, dataset, registry = _context(train_limit=256, test_limit=64)
    model = _build(context, dataset)
    summary = registry.hook.summarize_model(model=model, context=context)
    assert "1,199,882" in summary
    for count in SEED_PARAMS:
        assert count in summary, count
    assert model.count_params() == 1_199_882
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert model.layers[-2].rate == 0.25  # the seed's last Dropout


def test_same_seed_builds_the_same_weights_and_another_seed_does_not(data_dir: Path) -> None:
    context, dataset, _ = _context(train_limit=256, test_limit=64, seed=7)
    first, second = _weights(_build(context, dataset)), _weights(_build(context, dataset))
    other_context, _, _ = _context(train_limit=256, test_limit=64, seed=8)
    third = _weights(_build(other_context, dataset))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, c) for a, c in zip(first, third))


def test_configured_optimizer_learning_rate_and_schedule_are_used(data_dir: Path) -> None:
    import keras

    context, dataset, _ = _context(train_limit=1280, test_limit=64, learning_rate=0.0123, lr_schedule="constant", beta_1=0.8)
    model = _build(context, dataset)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam) and context.state["optimizer"] is optimizer
    assert float(optimizer.learning_rate) == pytest.approx(0.0123)
    assert float(optimizer.beta_1) == pytest.approx(0.8)

    context, dataset, _ = _context(train_limit=1280, test_limit=64, optimizer="sgd", learning_rate=0.05, lr_schedule="constant", momentum=0.5)
    optimizer = _build(context, dataset).optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and float(optimizer.momentum) == 0.5

    # one-cycle-like: 2 epochs × 10 batches of 128 → warm-up over 6 steps from lr/25 to lr, then decay to 0
    context, dataset, _ = _context(train_limit=1280, test_limit=64, epochs=2, learning_rate=0.002, lr_schedule="onecycle")
    schedule = _build(context, dataset).optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    rates = [float(schedule(step)) for step in range(21)]
    assert rates[0] == pytest.approx(0.002 / 25)
    assert max(rates) == pytest.approx(0.002) and rates.index(max(rates)) == 6
    assert rates[20] == pytest.approx(0.0, abs=1e-9)


# -- training ------------------------------------------------------------------------------
class _EpochObserver:
    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, float]]] = []

    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))


@pytest.fixture(scope="module")
def fitted(data_dir: Path) -> dict[str, Any]:
    """One fit of the seed CNN on 2,000 real images (1 epoch, batch 128), output captured."""
    stream = io.StringIO()
    registry = _registry()
    observer = _EpochObserver()
    registry.register(observer)
    context, dataset, _ = _context(stream, registry=registry)
    model = _build(context, dataset)
    result = registry.call_first("fit", model=model, dataset=dataset, context=context)
    return {"context": context, "dataset": dataset, "model": model, "result": result,
            "output": stream.getvalue(), "observer": observer}


def test_fit_prints_the_seed_log_lines_and_reports_epoch_metrics(fitted: dict[str, Any]) -> None:
    output, result = fitted["output"], fitted["result"]
    # 2,000 images in 16 batches of 128, a line every 5 batches
    for line in ("Train Epoch: 1 [640/2000 (31%)] Loss: ", "Train Epoch: 1 [1280/2000 (62%)] Loss: ",
                 "Train Epoch: 1 [1920/2000 (94%)] Loss: "):
        assert line in output, output
    assert output.count("Train Epoch: ") == 3
    assert output.count("Test set: Average loss: ") == 1 and "/500 (" in output
    assert set(result.metrics) == {"train_loss", "test_loss", "test_accuracy"}
    assert result.run_id == "r"
    assert [h["epoch"] for h in result.history] == [1.0]
    assert result.metrics["test_accuracy"] > 0.6, result.metrics  # 2,000 real images learn something
    assert fitted["observer"].epochs == [(1, result.metrics)]
    correct = round(result.metrics["test_accuracy"] * 500)
    assert f"Accuracy: {correct}/500 (" in output


def test_evaluate_hook_agrees_with_the_metrics_fit_reported(fitted: dict[str, Any]) -> None:
    context, dataset, model = fitted["context"], fitted["dataset"], fitted["model"]
    metrics = context.registry.call_first("evaluate", model=model, split=dataset.test, context=context)
    assert metrics["total"] == 500.0
    assert metrics["accuracy"] == pytest.approx(fitted["result"].metrics["test_accuracy"])
    assert metrics["correct"] == round(metrics["accuracy"] * 500)
    assert metrics["loss"] == pytest.approx(fitted["result"].metrics["test_loss"], rel=1e-4)


def test_train_step_runs_one_step_returns_its_loss_and_changes_the_weights(data_dir: Path) -> None:
    from modelcycle.plugins.keras.model import to_inputs

    context, dataset, registry = _context(train_limit=256, test_limit=64)
    model = _build(context, dataset)
    x = to_inputs(dataset.train.images[:64], context.preprocessing)
    y = np.asarray(dataset.train.labels[:64])
    before = _weights(model)
    loss = registry.call_first("train_step", model=model, batch=(x, y), context=context)
    assert isinstance(loss, float) and np.isfinite(loss) and 1.0 < loss < 5.0  # ~ln 10 untrained
    after = _weights(model)
    assert all(a.shape == b.shape for a, b in zip(before, after))
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))  # every kernel and bias moved
    assert int(model.optimizer.iterations) == 1
    # channels-first batches (the other frameworks' layout) are accepted too
    loss_nchw = registry.call_first("train_step", model=model, batch=(x.transpose(0, 3, 1, 2), y), context=context)
    assert isinstance(loss_nchw, float) and int(model.optimizer.iterations) == 2


# -- the whole train stage, artifacts and serving --------------------------------------------
class _ModelCapture:
    """Wraps the ``fit`` hook to keep the live model the use case trained."""

    def __init__(self) -> None:
        self.model: Any = None

    @hookimpl(wrapper=True)
    def fit(self, model: Any) -> Any:
        result = yield
        self.model = model
        return result


@pytest.fixture(scope="module")
def trained_keras(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from modelcycle.core.lifecycle import UseCase

    directory = write_keras_use_case(tmp_path_factory.mktemp("keras") / "uc", name="small-keras", **SMALL)
    capture = _ModelCapture()
    outputs = UseCase(directory, plugins=[capture]).train()
    return {"outputs": outputs, "model": capture.model, "directory": directory}


def test_train_stage_writes_keras_and_saved_model_artifacts(trained_keras: dict[str, Any]) -> None:
    from modelcycle.core.artifacts import read_manifest

    outputs = trained_keras["outputs"]
    model_dir = Path(outputs["model_dir"])
    assert outputs["framework"] == "keras"
    assert (model_dir / "model.keras").is_file()
    assert (model_dir / "model" / "1" / "saved_model.pb").is_file()
    assert (model_dir / "model" / "1" / "variables").is_dir()
    manifest = read_manifest(model_dir, expected_framework="keras")
    assert json.loads((model_dir / "modelcycle.json").read_text())["framework"] == "keras"
    assert manifest.model_files == ["model.keras", "model/1"]
    assert manifest.input_schema.shape == (1, 28, 28)
    assert manifest.model["dropout_2"] == 0.25 and manifest.hyperparameters["batch_size"] == 128
    assert manifest.metrics["test_accuracy"] == outputs["metrics"]["test_accuracy"]
    assert manifest.libraries["keras"].startswith("3.")
    with tarfile.open(outputs["archive"]) as tar:
        names = set(tar.getnames())
    assert {"model.keras", "model/1/saved_model.pb", "modelcycle.json", "code/inference.py"} <= names
    assert "modelcycle[keras]==" in (model_dir / "code" / "requirements.txt").read_text()


def test_served_predictions_equal_the_in_memory_model(trained_keras: dict[str, Any], mnist_test_images: tuple[Any, Any]) -> None:
    from modelcycle.core.serving.pipeline import InferencePipeline

    model_dir = Path(trained_keras["outputs"]["model_dir"])
    pipeline = InferencePipeline(model_dir)
    images, labels = mnist_test_images
    raw = images[:, None].astype(np.float32)
    served = pipeline.predict(raw)
    inputs = pipeline.manifest.preprocessing.apply(raw).transpose(0, 2, 3, 1)
    expected = np.asarray(trained_keras["model"](inputs, training=False))
    assert served.shape == (64, 10) and served.dtype == np.float32
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-4)
    assert (served.argmax(1) == labels).mean() > 0.6
    assert pipeline.predict(raw[:1]).shape == (1, 10)  # any batch size, one traced function


def test_saved_model_export_serves_the_same_probabilities(trained_keras: dict[str, Any], mnist_test_images: tuple[Any, Any]) -> None:
    import tensorflow as tf

    model_dir = Path(trained_keras["outputs"]["model_dir"])
    from modelcycle.core.artifacts import read_manifest

    manifest = read_manifest(model_dir)
    raw = mnist_test_images[0][:16, None].astype(np.float32)
    inputs = manifest.preprocessing.apply(raw).transpose(0, 2, 3, 1)
    loaded = tf.saved_model.load(str(model_dir / "model" / "1"))
    signature = loaded.signatures["serving_default"]  # what TensorFlow Serving calls
    (output,) = signature(tf.constant(inputs)).values()
    expected = np.asarray(trained_keras["model"](inputs, training=False))
    np.testing.assert_allclose(output.numpy(), expected, atol=1e-5)


def test_json_and_npy_requests_give_the_same_probabilities(trained_keras: dict[str, Any], mnist_test_images: tuple[Any, Any]) -> None:
    import orjson

    from modelcycle.core.serving.codecs import JSON, NPY
    from modelcycle.core.serving.pipeline import InferencePipeline

    pipeline = InferencePipeline(Path(trained_keras["outputs"]["model_dir"]))
    images = mnist_test_images[0][:8]
    body = orjson.dumps({"input_data": [{"values": images}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    json_probs = pipeline.predict(pipeline.decode(body, JSON))
    buffer = io.BytesIO()
    np.save(buffer, images)
    npy_probs = pipeline.predict(pipeline.decode(buffer.getvalue(), NPY))
    np.testing.assert_allclose(npy_probs, json_probs, atol=1e-6)
    out, content_type = pipeline.encode(json_probs, JSON, "sid-1")
    document = orjson.loads(out)
    assert content_type == JSON and document["scoring_id"] == "sid-1"
    assert document["predictions"][0]["fields"] == ["prediction", "probability"]
    values = document["predictions"][0]["values"]
    assert [row[0] for row in values] == json_probs.argmax(1).tolist()
    np.testing.assert_allclose(np.array([row[1] for row in values]), json_probs, atol=1e-6)
    out, content_type = pipeline.encode(npy_probs, NPY)
    assert content_type == NPY
    np.testing.assert_allclose(np.load(io.BytesIO(out)), npy_probs, atol=1e-7)


def test_model_with_a_lambda_layer_is_refused_not_executed(trained_keras: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    import keras

    from modelcycle.core.artifacts import hash_files, read_manifest, write_manifest
    from modelcycle.core.errors import ArtifactError
    from modelcycle.core.serving.pipeline import InferencePipeline

    def rehash(model_dir: Path) -> None:  # the manifest rewritten too: the loader itself must refuse
        write_manifest(model_dir, read_manifest(model_dir).model_copy(update={"files": hash_files(model_dir)}))

    copy = Path(shutil.copytree(trained_keras["outputs"]["model_dir"], tmp_path / "copy"))
    marker = tmp_path / "executed"
    touch = lambda x, path=str(marker): (__import__("pathlib").Path(path).touch(), x)[1]  # noqa: E731
    evil = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(touch)])
    evil.save(copy / "model.keras")
    rehash(copy)
    assert marker.exists()  # building the model ran the lambda once
    marker.unlink()
    with pytest.raises(ArtifactError, match="model.keras"):
        InferencePipeline(copy)
    assert not marker.exists()
    (copy / "model.keras").write_bytes(b"not a zip file")
    rehash(copy)
    with pytest.raises(ArtifactError, match="cannot load model.keras"):
        InferencePipeline(copy)


# -- MLflow autolog ------------------------------------------------------------------------
@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield mlflow
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _fit_in_run(mlflow: Any, capture: str) -> Any:
    context, dataset, registry = _context(train_limit=1024, test_limit=256, capture=capture)
    model = _build(context, dataset)
    with mlflow.start_run() as run:
        registry.call_first("fit", model=model, dataset=dataset, context=context)
    return mlflow.get_run(run.info.run_id).data


def test_capture_autolog_logs_params_and_metrics_into_the_active_run(data_dir: Path, mlflow_store: Any) -> None:
    from mlflow.utils.autologging_utils import autologging_is_disabled

    data = _fit_in_run(mlflow_store, "autolog")
    assert data.params.get("epochs") == "1" and data.params.get("batch_size") == "128", data.params
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(data.metrics), data.metrics
    assert 0.0 < data.metrics["val_accuracy"] <= 1.0
    assert autologging_is_disabled("keras")  # switched off again after fit


def test_capture_manual_logs_nothing_to_mlflow(data_dir: Path, mlflow_store: Any) -> None:
    data = _fit_in_run(mlflow_store, "manual")
    assert data.params == {} and data.metrics == {}


# -- the whole lifecycle through the CLI on full MNIST --------------------------------------
def _modelcycle(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )


@pytest.mark.slow
def test_full_mnist_two_epochs_through_the_cli(tmp_path: Path, data_dir: Path) -> None:
    from modelcycle.platforms.local.endpoints import process_alive

    directory = tmp_path / "mnist-keras"
    init = _modelcycle("init", str(directory), "--framework", "keras", "--example", "mnist", timeout=120)
    assert init.returncode == 0, init.stderr
    assert "framework: keras" in (directory / "modelcycle.yaml").read_text()
    pid = None
    try:
        train = _modelcycle("-C", str(directory), "train")
        assert train.returncode == 0, train.stderr
        assert "1,199,882" in train.stdout
        assert "Train Epoch: 1 [6400/60000 (11%)] Loss: " in train.stdout
        assert "Train Epoch: 2 [" in train.stdout and train.stdout.count("/10000 (") == 2

        status = json.loads(_modelcycle("-C", str(directory), "status", "--json").stdout)
        assert status["trained"] and status["metrics"]["test_accuracy"] >= 0.985, status["metrics"]

        deploy = _modelcycle("-C", str(directory), "deploy", timeout=300)
        assert deploy.returncode == 0, deploy.stderr
        status = json.loads(_modelcycle("-C", str(directory), "status", "--json").stdout)
        pid = status["endpoint"]["pid"]
        assert status["deployed"] and process_alive(pid)

        score = _modelcycle("-C", str(directory), "score", "--samples", "20", timeout=300)
        assert score.returncode == 0, score.stderr
        correct = int(score.stdout.split("(")[-1].split("/")[0])
        assert correct >= 19, score.stdout
    finally:
        cleanup = _modelcycle("-C", str(directory), "cleanup", timeout=300)
    assert cleanup.returncode == 0, cleanup.stderr
    assert "{'serving': 1}" in cleanup.stdout
    assert pid is not None and not process_alive(pid)
