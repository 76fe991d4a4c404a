"""The Lightning framework plugin on small real MNIST slices: loading, the seed summary, the
Trainer-driven fit (seed log lines, history, optimizer settings, the ``train_step`` hook), the
artifact served exactly like the in-memory model, MLflow autologging, and (slow) the whole
lifecycle through the CLI on full MNIST."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, SMALL, write_use_case
from modelcycle.core.config import Hyperparameters, UseCaseConfig
from modelcycle.core.errors import PluginContractError
from modelcycle.core.markers import hookimpl
from modelcycle.core.registry import REQUIRED_FRAMEWORK_HOOKS, PluginRegistry
from modelcycle.core.training import TrainingContext, TrainingReporter, dataset_input_shape, load_training_data
from modelcycle.plugins.pytorch.config import PytorchModelConfig
from modelcycle.lib.torch.nets import ConvNet

EXAMPLES = REPO / "src" / "modelcycle" / "examples"


# ------------------------------------------------------------------------------------ helpers


def _context(
    stream: io.StringIO | None = None,
    capture: str = "manual",
    train_limit: int = 2000,
    test_limit: int = 500,
    plugins: tuple[Any, ...] = (),
    **hyperparameters: Any,
) -> tuple[TrainingContext, Any, PluginRegistry]:
    config = UseCaseConfig(
        name="t", framework="lightning", capture=capture,  # type: ignore[arg-type]
        data={"dataset": "mnist", "train_limit": train_limit, "test_limit": test_limit},  # type: ignore[arg-type]
        hyperparameters=Hyperparameters(**{"epochs": 1, "log_interval": 10, **hyperparameters}),
    )
    registry = PluginRegistry()
    for plugin in plugins:
        registry.register(plugin)
    registry.load_framework("lightning")
    dataset, preprocessing = load_training_data(config)
    context = TrainingContext(
        config=config, model_config=PytorchModelConfig(), registry=registry,
        reporter=TrainingReporter(registry.hook, stream=stream or io.StringIO(), progress=False),
        run_id="r", output_dir=Path("/nonexistent"),
        preprocessing=preprocessing, input_shape=dataset_input_shape(dataset),
    )
    return context, dataset, registry


def _fit(**kwargs: Any) -> tuple[TrainingContext, Any, Any, str]:
    """Build and fit; returns (context, model, result, printed output)."""
    stream = io.StringIO()
    context, dataset, registry = _context(stream, **kwargs)
    model = registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)
    result = registry.call_first("fit", model=model, dataset=dataset, context=context)
    return context, model, result, stream.getvalue()


# ------------------------------------------------------------------------ loading, summary


def test_registry_loads_lightning_with_every_required_hook() -> None:
    registry = PluginRegistry()
    plugin = registry.load_framework("lightning")
    implemented = {caller.name for caller in registry.pm.get_hookcallers(plugin) or []}
    assert REQUIRED_FRAMEWORK_HOOKS <= implemented, REQUIRED_FRAMEWORK_HOOKS - implemented
    assert {"model_config_class", "summarize_model"} <= implemented
    assert registry.framework == "lightning"
    assert registry.pm.hook.model_config_class() is PytorchModelConfig


def test_lightning_is_imported_only_when_a_hook_needs_it() -> None:
    """Neither loading the pytorch plugin nor loading this one (framework_info, ``model:``) imports
    Lightning; training does (through :mod:`modelcycle.plugins.lightning.training`)."""
    code = (
        "import sys, modelcycle, modelcycle.cli\n"
        "from modelcycle.core.registry import PluginRegistry\n"
        "PluginRegistry().load_framework('pytorch')\n"
        "print(sorted(m for m in ('lightning', 'torchmetrics') if m in sys.modules))\n"
        "registry = PluginRegistry()\n"
        "registry.load_framework('lightning')\n"
        "registry.pm.hook.framework_info()\n"
        "print('lightning' in sys.modules)\n"
        "import modelcycle.plugins.lightning.training\n"
        "print('lightning' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["[]", "False", "True"]


def test_summary_shows_the_seed_module_and_convnet_parameter_counts(data_dir: Path) -> None:
    context, dataset, registry = _context(train_limit=64, test_limit=10)
    model = registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)
    assert isinstance(model.net, ConvNet)
    text = registry.hook.summarize_model(model=model, context=context)
    rows = text.splitlines()

    def row(prefix: str) -> str:
        return next(r for r in rows if prefix in r)

    assert row("Conv2d: 2-1").split()[-1] == "260"
    assert row("Conv2d: 2-2").split()[-1] == "5,020"
    assert row("Linear: 2-4").split()[-1] == "16,050"
    assert row("Linear: 2-5").split()[-1] == "510"
    assert "[64, 10, 24, 24]" in row("Conv2d: 2-1")
    # the seed's PytorchLightning_CNN_MNIST rows: loss, network, accuracy
    assert rows.index(row("NLLLoss: 1-1")) < rows.index(row("ConvNet: 1-2")) < rows.index(row("Accuracy: 1-3"))
    assert "Total params: 21,840" in text


# ------------------------------------------------------------------------------------ fit


def test_fit_prints_the_seed_lines_and_records_per_epoch_metrics(data_dir: Path) -> None:
    context, _, result, output = _fit(epochs=2, learning_rate=0.002, lr_schedule="constant", beta_1=0.8)
    # 2,000 images, batch 64: 32 batches; a line every 10 batches
    assert "Train Epoch: 1 [640/2000 (31%)] Loss: " in output
    assert "Train Epoch: 2 [1920/2000 (94%)] Loss: " in output
    assert "[0/2000" not in output
    assert output.count("Test set: Average loss: ") == 2
    assert output.count("/500 (") == 2
    assert "GPU available" not in output
    history = context.reporter.history
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    for h in history:
        assert set(h) == {"epoch", "train_loss", "test_loss", "test_accuracy"}
        assert h["train_loss"] > 0 and h["test_loss"] > 0 and 0.0 <= h["test_accuracy"] <= 1.0
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["test_accuracy"] > 0.8  # 2 epochs over 2,000 real images learn the digits
    assert result.metrics == {k: v for k, v in history[-1].items() if k != "epoch"}
    assert result.history == history and result.run_id == "r"
    # the configured optimizer is the one the Trainer stepped
    optimizer = context.state["optimizer"]
    assert context.state["trainer"].optimizers[0] is optimizer
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.002)
    assert optimizer.param_groups[0]["betas"][0] == pytest.approx(0.8)
    assert context.state["scheduler"] is None


def test_sgd_and_the_per_batch_one_cycle_schedule(data_dir: Path) -> None:
    context, _, _, _ = _fit(train_limit=640, test_limit=100, optimizer="sgd", learning_rate=0.05, momentum=0.5, lr_schedule="constant")
    optimizer = context.state["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.5
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)

    context, _, _, _ = _fit(train_limit=640, test_limit=100, epochs=2, learning_rate=0.004, lr_schedule="onecycle")
    scheduler = context.state["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert context.state["trainer"].lr_scheduler_configs[0].interval == "step"
    assert scheduler.total_steps == 2 * 10  # 640 images, batch 64, 2 epochs
    assert scheduler.last_epoch == 20  # stepped once per batch, to the end of the cycle
    assert scheduler.optimizer.param_groups[0]["lr"] < 0.004 / 25  # annealed below its starting point


def test_same_seed_gives_identical_weights_and_another_seed_does_not(data_dir: Path) -> None:
    weights = [
        _fit(train_limit=640, test_limit=100, seed=seed)[1].net.state_dict() for seed in (7, 7, 8)
    ]
    assert all(torch.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values()))
    assert not all(torch.equal(a, c) for a, c in zip(weights[0].values(), weights[2].values()))


def test_trainer_test_with_the_modules_accuracy_metric_agrees_with_the_evaluate_hook(data_dir: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from modelcycle.lib.torch.training import to_tensor

    context, model, result, _ = _fit(train_limit=640, test_limit=200)
    dataset, _ = load_training_data(context.config)
    x = to_tensor(dataset.test.images, context)
    y = torch.from_numpy(dataset.test.labels.astype(np.int64))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    (tested,) = trainer.test(model, DataLoader(TensorDataset(x, y), batch_size=100), verbose=False)
    assert tested["test_acc"] == pytest.approx(result.metrics["test_accuracy"], abs=1e-6)
    assert tested["test_loss"] == pytest.approx(result.metrics["test_loss"], rel=1e-4)


class _CountingTrainStep:
    """A user plugin replacing the Lightning plugin's ``train_step`` (it runs first)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(tryfirst=True)
    def train_step(self, model: Any, batch: Any, context: TrainingContext) -> torch.Tensor:
        self.calls += 1
        inputs, targets = batch
        return torch.nn.functional.nll_loss(model(inputs), targets)


class _SteppingTrainStep:
    """A ``train_step`` written for the PyTorch plugin's contract: returns a float."""

    @hookimpl(tryfirst=True)
    def train_step(self, model: Any, batch: Any, context: TrainingContext) -> float:
        return 0.5


def test_training_step_goes_through_the_train_step_hook(data_dir: Path) -> None:
    counter = _CountingTrainStep()
    _, _, result, _ = _fit(train_limit=640, test_limit=100, epochs=2, plugins=(counter,))
    assert counter.calls == 2 * 10
    assert result.metrics["train_loss"] > 0

    with pytest.raises(PluginContractError, match="must return the batch loss as a tensor"):
        _fit(train_limit=640, test_limit=100, plugins=(_SteppingTrainStep(),))


class _InterruptingTrainStep:
    """Ctrl+C during the third batch."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(tryfirst=True)
    def train_step(self, model: Any, batch: Any, context: TrainingContext) -> Any:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return None  # let the plugin's own train_step answer


def test_ctrl_c_raises_keyboard_interrupt_and_keeps_the_sigint_handler(data_dir: Path) -> None:
    import signal

    handler = signal.getsignal(signal.SIGINT)
    interrupter = _InterruptingTrainStep()
    with pytest.raises(KeyboardInterrupt):  # Lightning itself would sys.exit(1) and ignore SIGINT
        _fit(train_limit=640, test_limit=100, plugins=(interrupter,))
    assert interrupter.calls == 3
    assert signal.getsignal(signal.SIGINT) is handler


# ------------------------------------------------------------------- artifact and serving


class _CaptureModel:
    """Keeps the in-memory model the trainer saves."""

    def __init__(self) -> None:
        self.model: Any = None

    @hookimpl(wrapper=True)
    def save_model(self, model: Any, model_dir: Path, context: TrainingContext) -> Any:
        self.model = model
        return (yield)


def test_packaged_model_serves_the_in_memory_model_probabilities(
    tmp_path: Path, data_dir: Path, mnist_test_images, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.serving.codecs import NPY
    from modelcycle.core.serving.pipeline import InferencePipeline

    monkeypatch.chdir(tmp_path)  # the tracked run's artifacts default to ./mlruns
    directory = write_use_case(tmp_path / "uc", framework="lightning", name="small-lightning", **SMALL)
    capture = _CaptureModel()
    outputs = UseCase(directory, plugins=[capture]).train()
    assert outputs["framework"] == "lightning"
    model_dir = Path(outputs["model_dir"])
    assert Path(outputs["archive"]).is_file()
    manifest = read_manifest(model_dir)
    assert manifest.framework == "lightning"
    assert manifest.model_files == ["model.pth"]
    # exactly the PyTorch plugin's artifact: the bare network's state_dict
    state = torch.load(model_dir / "model.pth", weights_only=True)
    assert list(state) == list(ConvNet().state_dict())

    pipeline = InferencePipeline(model_dir)
    assert pipeline.registry.framework == "lightning"
    images, _ = mnist_test_images
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    served = pipeline.predict(pipeline.decode(buffer.getvalue(), NPY))

    model = capture.model
    model.eval()
    normalised = manifest.preprocessing.apply(images[:, None].astype(np.float32))
    with torch.no_grad():
        expected = model(torch.from_numpy(normalised)).exp().numpy()
    assert served.shape == (64, 10)
    np.testing.assert_allclose(served, expected, atol=1e-5)

    # and the served model scores what training measured on the same 500 test images
    test = load_dataset("mnist", data_dir / "mnist").test.take(manifest.dataset.test_records)
    buffer = io.BytesIO()
    np.save(buffer, test.images, allow_pickle=False)
    correct = int((pipeline.predict(pipeline.decode(buffer.getvalue(), NPY)).argmax(1) == test.labels).sum())
    assert correct == round(manifest.metrics["test_accuracy"] * len(test))


def test_example_differs_from_the_pytorch_one_only_by_name_description_framework(tmp_path: Path) -> None:
    from modelcycle.cli import main
    from modelcycle.core.config import load_config

    pytorch = yaml.safe_load((EXAMPLES / "mnist-pytorch" / "modelcycle.yaml").read_text())
    lightning = yaml.safe_load((EXAMPLES / "mnist-lightning" / "modelcycle.yaml").read_text())
    assert lightning["framework"] == "lightning" and lightning["name"] == "mnist-lightning"
    for key in ("name", "description", "framework"):
        pytorch.pop(key), lightning.pop(key)
    assert lightning == pytorch

    assert main(["init", str(tmp_path / "digits"), "--framework", "lightning", "--example", "mnist"]) == 0
    config = load_config(tmp_path / "digits")
    assert config.framework == "lightning" and config.name == "digits"


# ------------------------------------------------------------------------------ autolog


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private MLflow tracking database (artifacts under the same temporary directory)."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    try:
        yield root
    finally:
        mlflow.set_tracking_uri(previous)


def _experiment(root: Path, name: str) -> str:
    import mlflow

    return mlflow.create_experiment(name, artifact_location=(root / name).as_uri())


def test_autolog_records_lightning_params_and_training_accuracy(tracking: Path, data_dir: Path) -> None:
    import mlflow
    from mlflow.utils.autologging_utils import autologging_is_disabled

    experiment = _experiment(tracking, "autolog")
    with mlflow.start_run(experiment_id=experiment) as run:
        _, model, _, _ = _fit(capture="autolog", train_limit=640, test_limit=100, epochs=2, lr_schedule="constant", learning_rate=0.003)
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.params["epochs"] == "2"
    assert logged.params["optimizer_name"] == "Adam"
    assert float(logged.params["lr"]) == pytest.approx(0.003)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_acc")
    assert [m.step for m in history] == [0, 1]  # once per epoch, not per step
    assert all(0.0 < m.value <= 1.0 for m in history)
    # the loss and test metrics are the core tracker's (per epoch, both capture modes), not duplicated here
    assert not {"train_loss", "test_loss", "test_accuracy"} & set(logged.metrics)
    # autologging and the per-batch accuracy are switched off again once fit is over
    assert autologging_is_disabled(mlflow.pytorch.FLAVOR_NAME)
    assert model.track_accuracy is False


def test_autolog_through_the_use_case_adds_to_the_tracked_run_without_duplicates(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.tracking import wait_for_pending_writes

    monkeypatch.chdir(tmp_path)  # whatever MLflow writes relative to the working directory stays here
    previous = mlflow.get_tracking_uri()
    sections = {**SMALL, "hyperparameters": {**SMALL["hyperparameters"], "epochs": 2}}
    directory = write_use_case(tmp_path / "uc", framework="lightning", name="autolog-lightning", capture="autolog", **sections)
    try:
        outputs = UseCase(directory).train()
    finally:
        mlflow.set_tracking_uri(previous)
    wait_for_pending_writes(directory / ".modelcycle")  # the detached writer may still be applying the spool
    client = MlflowClient(outputs["tracking_uri"])
    run = client.get_run(outputs["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer_name"] == "Adam" and run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_acc")] == [0, 1]
    for name in ("train_loss", "test_loss", "test_accuracy"):
        values = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in values] == [1, 2], (name, values)
    assert run.data.metrics["test_accuracy"] == pytest.approx(outputs["metrics"]["test_accuracy"])


def test_manual_capture_or_no_active_run_autologs_nothing(tracking: Path, data_dir: Path) -> None:
    import mlflow

    experiment = _experiment(tracking, "manual")
    mlflow.set_experiment(experiment_id=experiment)
    try:
        _fit(capture="autolog", train_limit=320, test_limit=100)  # no active run: no run is created
        assert mlflow.active_run() is None
        assert mlflow.search_runs([experiment]).empty
        with mlflow.start_run(experiment_id=experiment) as run:
            _fit(capture="manual", train_limit=320, test_limit=100)
    finally:
        mlflow.set_experiment("Default")
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.params == {} and logged.metrics == {}
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id) == []


# ------------------------------------------------------------- the whole lifecycle (slow)


def _modelcycle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", *args],
        capture_output=True, text=True, timeout=900, env=os.environ.copy(),
    )


@pytest.mark.slow
def test_full_mnist_two_epochs_through_the_cli(tmp_path: Path, data_dir: Path) -> None:
    from modelcycle.platforms.local.endpoints import process_alive

    directory = tmp_path / "mnist-lightning"
    init = _modelcycle("init", str(directory), "--framework", "lightning", "--example", "mnist")
    assert init.returncode == 0, init.stderr
    pid = None
    try:
        train = _modelcycle("-C", str(directory), "train")
        assert train.returncode == 0, train.stderr
        assert "NLLLoss: 1-1" in train.stdout and "ConvNet: 1-2" in train.stdout
        assert "Train Epoch: 1 [6400/60000 (11%)] Loss: " in train.stdout
        assert "Train Epoch: 2 [57600/60000 (96%)] Loss: " in train.stdout
        assert train.stdout.count("/10000 (") == 2

        status = json.loads(_modelcycle("-C", str(directory), "status", "--json").stdout)
        assert status["framework"] == "lightning" and status["trained"]
        assert status["metrics"]["test_accuracy"] >= 0.98, status["metrics"]
        print(f"\nfull MNIST, 2 epochs, lightning: {status['metrics']}")

        deploy = _modelcycle("-C", str(directory), "deploy")
        assert deploy.returncode == 0, deploy.stderr
        status = json.loads(_modelcycle("-C", str(directory), "status", "--json").stdout)
        pid = status["endpoint"]["pid"]
        assert status["deployed"] and process_alive(pid)

        score = _modelcycle("-C", str(directory), "score", "--samples", "20")
        assert score.returncode == 0, score.stderr
        correct = int(score.stdout.split("(")[-1].split("/")[0])
        assert correct >= 19, score.stdout
        print(f"scored {correct}/20 correct")
    finally:
        cleanup = _modelcycle("-C", str(directory), "cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    assert "{'serving': 1}" in cleanup.stdout
    assert pid is not None and not process_alive(pid)
