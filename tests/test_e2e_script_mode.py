"""Script mode end to end, through the CLI as a user runs it, on real MNIST: the seed-style use
cases under tests/resources/ (the user's own train.py and inference.py) go through train → deploy
→ score over HTTP (JSON and NPY) → monitor → log-payload → log-feedback → evaluate → cleanup; and
``import-signature`` on their model_signature.json makes a use case that trains and deploys.

The PyTorch script trains one epoch on the full training set; the Keras one on its first 40,000
images (its ``--max-samples``), both tested on all 10,000 test images.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO
from modelcycle.platforms.local.endpoints import process_alive

pytestmark = pytest.mark.slow

RESOURCES = REPO / "tests" / "resources"
#: per resource dir: the overrides of a short run, as a user passes them
RUNS = {
    "script-mnist-pytorch": ["--set", "training.hyperparameters.epochs=1"],
    "script-mnist-keras": ["--set", "training.hyperparameters.epochs=1",
                           "--set", "training.hyperparameters.max-samples=40000"],
}
JSON, NPY = "application/json", "application/x-npy"


def _modelcycle(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
        capture_output=True, text=True, timeout=1800, env=os.environ.copy(),
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    return result.stdout


def _test_images(data_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` MNIST test images (uint8, N×28×28) and labels, read from the IDX files."""
    def idx(name: str) -> np.ndarray:
        data = gzip.decompress((data_dir / "mnist" / f"{name}.gz").read_bytes())
        dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)

    return idx("t10k-images-idx3-ubyte")[:count], idx("t10k-labels-idx1-ubyte")[:count]


def _post(url: str, body: bytes, content_type: str, accept: str) -> tuple[str, bytes]:
    request = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type, "Accept": accept})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        return response.headers["Content-Type"], response.read()


def _probabilities(content_type: str, body: bytes) -> np.ndarray:
    """The (N, 10) answer of the seeds' handlers: NPY, a JSON list or {"predictions": ...}."""
    if content_type.startswith(NPY):
        return np.load(io.BytesIO(body), allow_pickle=False)
    document = json.loads(body)
    return np.asarray(document["predictions"] if isinstance(document, dict) else document)


def _copy(name: str, target: Path) -> Path:
    shutil.copytree(RESOURCES / name, target, ignore=shutil.ignore_patterns(".modelcycle", "__pycache__"))
    return target


def _train(directory: Path, overrides: list[str]) -> dict[str, Any]:
    """Train through the CLI; checks the seed's lines were streamed and parsed into the run."""
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.tracking import mlflow_client

    printed = _ok(_modelcycle(directory, *overrides, "train"))
    assert "Train Epoch: 1 [" in printed and "]\tLoss: " in printed, printed[-2000:]
    assert "Test set: Average loss: " in printed and "/10000 (" in printed, printed[-2000:]
    (run,) = json.loads(_ok(_modelcycle(directory, "runs", "--json")))
    assert run["status"] == "FINISHED" and run["metrics"]["test_accuracy"] >= 0.95, run["metrics"]
    outputs = UseCase(directory).state().stage("train").outputs
    client = mlflow_client(outputs["tracking_uri"])
    losses = client.get_metric_history(run["mlflow_run_id"], "train_loss")
    assert len(losses) >= 2 and len({m.step for m in losses}) == len(losses)  # one step per logged line
    accuracy = client.get_metric_history(run["mlflow_run_id"], "test_accuracy")
    assert [m.step for m in accuracy] == [1] and accuracy[0].value == run["metrics"]["test_accuracy"]
    return run


def _lifecycle(directory: Path, data_dir: Path, overrides: list[str]) -> None:
    """train → deploy → score (CLI, raw HTTP JSON and NPY) → monitor → log-payload → log-feedback
    → evaluate → cleanup; the endpoint process is gone afterwards, also when a step fails."""
    run = _train(directory, overrides)
    pid = None
    try:
        _ok(_modelcycle(directory, "deploy"))
        status = json.loads(_ok(_modelcycle(directory, "status", "--json")))
        pid, url = status["endpoint"]["pid"], status["endpoint"]["url"]
        assert status["deployed"] and status["served"]["run_id"] == run["run_id"]

        scored = _ok(_modelcycle(directory, "score", "--samples", "100"))
        correct = int(scored.split("(")[-1].split("/")[0])
        expected = run["metrics"]["test_accuracy"]
        assert correct >= 95 and abs(correct / 100 - expected) <= 0.05, (correct, expected)

        images, labels = _test_images(data_dir, 100)
        buffer = io.BytesIO()
        np.save(buffer, images)
        as_npy = _probabilities(*_post(url, buffer.getvalue(), NPY, NPY))
        as_json = _probabilities(*_post(url, json.dumps({"instances": images.tolist()}).encode(), JSON, JSON))
        assert as_npy.shape == as_json.shape == (100, 10)
        np.testing.assert_allclose(as_npy, as_json, atol=1e-5)
        http_correct = int((as_npy.argmax(axis=1) == labels).sum())
        assert http_correct == correct, (http_correct, correct)  # the CLI reads the answer as a client does

        _ok(_modelcycle(directory, "monitor"))
        assert "100 of 100 payload records in the store" in _ok(
            _modelcycle(directory, "log-payload", "--samples", "100", "--offset", "100"))
        feedback = _ok(_modelcycle(directory, "log-feedback", "--samples", "100"))
        assert "(100 matched to logged payload)" in feedback, feedback  # the endpoint logged raw images
        (quality,) = [m for m in json.loads(_ok(_modelcycle(directory, "evaluate", "--json")))
                      if m["monitor"] == "quality"]
        assert quality["status"] == "finished" and quality["metrics"]["accuracy"] >= 0.9, quality
        assert quality["violations"] == []
    finally:
        cleanup = _modelcycle(directory, "cleanup")
    _ok(cleanup)
    assert "'serving': 1" in cleanup.stdout
    assert pid is not None and not process_alive(pid)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_seed_script_use_case_runs_the_whole_lifecycle(name: str, tmp_path: Path, data_dir: Path) -> None:
    _lifecycle(_copy(name, tmp_path / name), data_dir, RUNS[name])


def test_an_imported_signature_trains_and_deploys_locally(tmp_path: Path, data_dir: Path) -> None:
    """``import-signature`` beside the seed's scripts writes a use case that runs them: trained
    from the imported modelcycle.yaml, written for the local platform, without edits."""
    import yaml

    directory = _copy("script-mnist-pytorch", tmp_path / "imported")
    (directory / "modelcycle.yaml").unlink()
    _ok(subprocess.run([sys.executable, "-m", "modelcycle.cli", "import-signature",
                        str(directory / "model_signature.json"), "--platform", "local"], capture_output=True, text=True, timeout=120))
    config = yaml.safe_load((directory / "modelcycle.yaml").read_text())
    assert config["training"]["entry_point"] == "train.py" and config["serving"]["entry_point"] == "inference.py"
    assert config["training"]["platform"] == config["serving"]["platform"] == "local"
    short = ["--set", "training.hyperparameters.max-train-samples=6400",
             "--set", "training.hyperparameters.max-test-samples=1000", "--set", "training.hyperparameters.epochs=1"]
    printed = _ok(_modelcycle(directory, *short, "train"))
    assert "Test set: Average loss: " in printed
    pid = None
    try:
        _ok(_modelcycle(directory, "deploy"))
        status = json.loads(_ok(_modelcycle(directory, "status", "--json")))
        pid = status["endpoint"]["pid"]
        assert status["metrics"]["test_accuracy"] >= 0.8, status["metrics"]
        scored = _ok(_modelcycle(directory, "score", "--samples", "100"))
        assert int(scored.split("(")[-1].split("/")[0]) >= 80
    finally:
        cleanup = _modelcycle(directory, "cleanup")
    _ok(cleanup)
    assert pid is not None and not process_alive(pid)
