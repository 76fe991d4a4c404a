"""The whole lifecycle on the full MNIST training set, through the CLI, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelcycle.platforms.local.endpoints import process_alive

pytestmark = pytest.mark.slow


def _modelcycle(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
        capture_output=True, text=True, timeout=900, env=os.environ.copy(),
    )


def test_full_mnist_one_epoch_lifecycle(tmp_path: Path, data_dir: Path) -> None:
    directory = tmp_path / "mnist-e2e"
    init = subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", "init", str(directory), "--framework", "pytorch", "--example", "mnist"],
        capture_output=True, text=True, timeout=60,
    )
    assert init.returncode == 0, init.stderr
    pid = None
    try:
        train = _modelcycle(directory, "--set", "hyperparameters.epochs=1", "train")
        assert train.returncode == 0, train.stderr
        assert "Train Epoch: 1 [6400/60000 (11%)] Loss:" in train.stdout
        assert "Accuracy: " in train.stdout and "/10000 (" in train.stdout

        deploy = _modelcycle(directory, "deploy")
        assert deploy.returncode == 0, deploy.stderr
        score = _modelcycle(directory, "score", "--samples", "100")
        assert score.returncode == 0, score.stderr
        correct = int(score.stdout.split("(")[-1].split("/")[0])
        assert correct >= 95, score.stdout

        status = json.loads(_modelcycle(directory, "status", "--json").stdout)
        pid = status["endpoint"]["pid"]
        assert status["trained"] and status["deployed"]
        assert status["metrics"]["test_accuracy"] >= 0.97, status["metrics"]
        assert Path(status["model_archive"]).is_file()
    finally:
        cleanup = _modelcycle(directory, "cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    assert "{'serving': 1}" in cleanup.stdout
    assert pid is not None and not process_alive(pid)
