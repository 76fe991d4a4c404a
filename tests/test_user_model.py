"""A user's own model code through the whole lifecycle, as a user runs it (the CLI): a PyTorch
``nn.Module``, a Keras model function and a Lightning module from the use case directory, on
small MNIST slices. The code travels with the model: ``deploy --run OLD`` after the file was
edited serves exactly what was trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelcycle.core.lifecycle import UseCase
from modelcycle.core.user_code import UserCodeError
from modelcycle.platforms.local.endpoints import process_alive
from conftest import stop_deployed, write_use_case

TINY = {
    "data": {"dataset": "mnist", "train_limit": 1000, "test_limit": 200},
    "hyperparameters": {"epochs": 1, "log_interval": 5, "batch_size": 32, "learning_rate": 0.005},
}

TORCH_NETS = '''
import torch
from torch import nn


class MyNet(nn.Module):
    """A small MLP sized from the data: returns logits."""

    def __init__(self, input_shape, num_classes, width=16):
        super().__init__()
        channels, height, width_px = input_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width_px, width), nn.ReLU(),
                                  nn.Linear(width, num_classes))

    def forward(self, x):
        return self.body(x)
'''

KERAS_NETS = '''
import keras


def build(input_shape, num_classes, units=16):
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])
'''

LIGHTNING_NETS = '''
import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class LitNet(L.LightningModule):
    """Its own training step (cross-entropy on logits) and optimizer."""

    def __init__(self, input_shape, num_classes, width=16):
        super().__init__()
        channels, height, width_px = input_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width_px, width), nn.ReLU(),
                                  nn.Linear(width, num_classes))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return F.cross_entropy(self(inputs), targets)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.005)
'''


def _modelcycle(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
        capture_output=True, text=True, timeout=600, env=os.environ.copy(),
    )


def _use_case(tmp_path: Path, name: str, framework_example: str, model: dict, files: dict[str, str]) -> Path:
    directory = write_use_case(tmp_path / name, framework_example, name=name, model=model, **TINY)
    for file_name, text in files.items():
        (directory / file_name).write_text(text)
    return directory


def _probabilities(directory: Path, images: np.ndarray) -> np.ndarray:
    """The endpoint's probabilities for ``images``, scored over HTTP."""
    return np.asarray(UseCase(directory).score(images=images).probabilities)


def _train_deploy_score(directory: Path) -> dict:
    train = _modelcycle(directory, "train")
    assert train.returncode == 0, train.stderr
    assert "Train Epoch: 1 [" in train.stdout and "Test set: Average loss:" in train.stdout
    deploy = _modelcycle(directory, "deploy")
    assert deploy.returncode == 0, deploy.stderr
    score = _modelcycle(directory, "score", "--samples", "50")
    assert score.returncode == 0, score.stderr
    correct = int(score.stdout.split("(")[-1].split("/")[0])
    assert correct >= 20, score.stdout  # far above chance (5 of 50) after one epoch on 1,000 images
    return json.loads(_modelcycle(directory, "status", "--json").stdout)


def _cleanup(directory: Path, pid: int | None) -> None:
    cleanup = _modelcycle(directory, "cleanup")
    stop_deployed(directory)
    assert cleanup.returncode == 0, cleanup.stderr
    assert pid is None or not process_alive(pid)


def test_pytorch_module_lifecycle_and_deploy_old_run_after_edit(tmp_path: Path, data_dir: Path,
                                                                mnist_test_images: tuple) -> None:
    directory = _use_case(tmp_path, "own-torch", "mnist-pytorch", {"class": "nets.py:MyNet", "options": {"width": 16}},
                          {"nets.py": TORCH_NETS})
    images = mnist_test_images[0][:8]
    pid = None
    try:
        status = _train_deploy_score(directory)
        pid = status["endpoint"]["pid"]
        first_run = status["run_id"]
        model_dir = Path(status["model_archive"]).parent / "model"
        manifest = json.loads((model_dir / "modelcycle.json").read_text())
        assert manifest["model"] == {"class": "nets.py:MyNet", "options": {"width": 16}, "output": "logits"}
        assert manifest["user_code"]["file"] == "code/user/nets.py"
        assert manifest["files"]["code/user/nets.py"] == manifest["user_code"]["sha256"]
        assert (model_dir / "code" / "inference.py").is_file()  # the entry point is still beside it
        before = _probabilities(directory, images)
        assert np.allclose(before.sum(axis=1), 1.0, atol=1e-5)

        # edit the file: another network (wider, outputs scaled) — a new run trains that one
        (directory / "nets.py").write_text(TORCH_NETS.replace("return self.body(x)", "return 3 * self.body(x)"))
        retrain = _modelcycle(directory, "--set", "model.options.width=24", "train", "--force")
        assert retrain.returncode == 0, retrain.stderr
        redeploy = _modelcycle(directory, "deploy")
        assert redeploy.returncode == 0, redeploy.stderr
        assert not np.allclose(_probabilities(directory, images), before, atol=1e-4)

        # the old run serves what it was trained with, from its own code/ copy
        (directory / "nets.py").write_text("raise SystemExit('this file is not what the old run serves')\n")
        old = _modelcycle(directory, "deploy", "--run", first_run[:8])
        assert old.returncode == 0, old.stderr
        assert np.array_equal(_probabilities(directory, images), before)
        pid = json.loads(_modelcycle(directory, "status", "--json").stdout)["endpoint"]["pid"]
    finally:
        _cleanup(directory, pid)


def _train_error(directory: Path) -> str:
    """Train in-process and return the error; assert no epoch started."""
    with pytest.raises(UserCodeError) as caught:
        UseCase(directory).train()
    assert not list((directory / ".modelcycle" / "runs").glob("*/model/modelcycle.json"))
    return str(caught.value)


@pytest.mark.parametrize(
    ("nets", "spec", "expected"),
    [
        (TORCH_NETS, "missing.py:MyNet", r"missing\.py does not exist"),
        (TORCH_NETS, "nets.py:YourNet", r"defines no 'YourNet' \(classes and functions it defines: MyNet\)"),
        ("class MyNet(:\n", "nets.py:MyNet", r"nets\.py has a syntax error at line 1"),
        (TORCH_NETS.replace("super().__init__()", "super().__init__(); raise RuntimeError('no GPU here')"),
         "nets.py:MyNet", r"raised RuntimeError: no GPU here"),
        ("class MyNet:\n    def __init__(self, num_classes):\n        pass\n", "nets.py:MyNet",
         r"built a MyNet, not torch\.nn\.Module"),
        (TORCH_NETS.replace("nn.Linear(width, num_classes)", "nn.Linear(width, 3)"), "nets.py:MyNet",
         r"must return a tensor of shape \(2, 10\) \(N, num_classes\), got \(2, 3\)"),
        (TORCH_NETS.replace("nn.Flatten(), ", ""), "nets.py:MyNet",
         r"forward on 2 training records of shape \(2, 1, 28, 28\) \(N, C, H, W\) raised RuntimeError"),
    ],
    ids=["missing-file", "missing-class", "syntax", "constructor", "wrong-kind", "wrong-shape", "forward-error"],
)
def test_pytorch_user_code_errors_before_training(tmp_path: Path, data_dir: Path, nets: str, spec: str,
                                                  expected: str) -> None:
    directory = _use_case(tmp_path, "bad-torch", "mnist-pytorch", {"class": spec}, {"nets.py": nets})
    message = _train_error(directory)
    assert "model.class" in message
    import re

    assert re.search(expected, message), message


def test_pytorch_errors_reach_the_cli_as_one_line_without_training(tmp_path: Path, data_dir: Path) -> None:
    directory = _use_case(tmp_path, "bad-cli", "mnist-pytorch", {"class": "nets.py:MyNet"},
                          {"nets.py": TORCH_NETS.replace("nn.Linear(width, num_classes)", "nn.Linear(width, 3)")})
    train = _modelcycle(directory, "train")
    assert train.returncode == 2
    assert "got (2, 3); size the last layer with the num_classes argument" in train.stderr
    assert "Traceback" not in train.stderr and "Train Epoch" not in train.stdout


def test_pytorch_sweep_over_options_and_tracked_params(tmp_path: Path, data_dir: Path) -> None:
    directory = _use_case(tmp_path, "sweep-torch", "mnist-pytorch", {"class": "nets.py:MyNet", "options": {"width": 4}},
                          {"nets.py": TORCH_NETS})
    sweep = _modelcycle(directory, "--set", "data.train_limit=200", "--set", "data.test_limit=100",
                        "sweep", "--param", "options.width=4,12", "--json")
    assert sweep.returncode == 0, sweep.stderr
    runs = UseCase(directory).runs()
    widths = sorted(run["params"]["model.options.width"] for run in runs)
    assert widths == ["12", "4"] and {run["params"]["model.class"] for run in runs} == {"nets.py:MyNet"}
    parameters = set()
    for run in runs:
        manifest = json.loads((Path(run["model_dir"]) / "modelcycle.json").read_text())
        parameters.add(manifest["model"]["options"]["width"])
    assert parameters == {4, 12}


@pytest.mark.parametrize("output", ["logits", "log_probs", "probs"])
def test_output_kinds_train_and_serve_probabilities(tmp_path: Path, data_dir: Path, output: str,
                                                    mnist_test_images: tuple) -> None:
    from modelcycle.core.serving.pipeline import InferencePipeline

    head = {"logits": "return self.body(x)", "log_probs": "return torch.log_softmax(self.body(x), 1)",
            "probs": "return torch.softmax(self.body(x), 1)"}[output]
    directory = _use_case(tmp_path, f"out-{output.replace('_', '-')}", "mnist-pytorch",
                          {"class": "nets.py:MyNet", "output": output},
                          {"nets.py": TORCH_NETS.replace("return self.body(x)", head)})
    outputs = UseCase(directory).train()
    assert outputs["metrics"]["test_accuracy"] > 0.5, outputs["metrics"]
    pipeline = InferencePipeline(Path(outputs["model_dir"]))
    probabilities = pipeline.predict(mnist_test_images[0][:16, None].astype(np.float32))
    assert probabilities.shape == (16, 10) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (probabilities.argmax(1) == mnist_test_images[1][:16]).mean() > 0.5


def test_keras_model_function_lifecycle(tmp_path: Path, data_dir: Path) -> None:
    directory = _use_case(tmp_path, "own-keras", "mnist-keras", {"class": "knets.py:build", "options": {"units": 16}},
                          {"knets.py": KERAS_NETS})
    pid = None
    try:
        status = _train_deploy_score(directory)
        pid = status["endpoint"]["pid"]
        model_dir = Path(status["model_archive"]).parent / "model"
        manifest = json.loads((model_dir / "modelcycle.json").read_text())
        assert manifest["user_code"]["file"] == "code/user/knets.py"
        assert manifest["model"] == {"class": "knets.py:build", "options": {"units": 16}}
    finally:
        _cleanup(directory, pid)


def test_keras_function_that_returns_no_probabilities_is_refused(tmp_path: Path, data_dir: Path) -> None:
    directory = _use_case(tmp_path, "bad-keras", "mnist-keras", {"class": "knets.py:build"},
                          {"knets.py": KERAS_NETS.replace('activation="softmax"', "activation=None")})
    assert "must return class probabilities (rows summing to 1)" in _train_error(directory)


def test_lightning_module_lifecycle(tmp_path: Path, data_dir: Path) -> None:
    directory = _use_case(tmp_path, "own-lightning", "mnist-lightning", {"class": "lit.py:LitNet"},
                          {"lit.py": LIGHTNING_NETS})
    pid = None
    try:
        status = _train_deploy_score(directory)
        pid = status["endpoint"]["pid"]
        model_dir = Path(status["model_archive"]).parent / "model"
        import torch

        state = torch.load(model_dir / "model.pth", weights_only=True)
        assert sorted(state) == ["body.1.bias", "body.1.weight", "body.3.bias", "body.3.weight"]  # the user's own keys
    finally:
        _cleanup(directory, pid)
