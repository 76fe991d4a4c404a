"""Script mode on the local platform: the seed-style use case in tests/resources/script-mnist-pytorch
(train.py + inference.py) trains unchanged through the SageMaker container contract, on real MNIST."""

from __future__ import annotations

import contextlib
import gzip
import io
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import REPO, isolated_module_env

RESOURCE = REPO / "tests" / "resources" / "script-mnist-pytorch"
#: a short run: 2,000 training images (32 batches of 64, a line every 5), 500 test images, 2 epochs
SHORT = {"epochs": 2, "max-train-samples": 2000, "max-test-samples": 500, "log-interval": 5}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _use_case(directory: Path, **training: Any) -> Path:
    """A copy of the resource use case with ``training`` merged into its training section."""
    shutil.copytree(RESOURCE, directory, ignore=shutil.ignore_patterns(".modelcycle", "__pycache__"))
    config = yaml.safe_load((directory / "modelcycle.yaml").read_text())
    hyperparameters = training.pop("hyperparameters", {})
    config["training"].update(training)
    config["training"]["hyperparameters"].update(hyperparameters)
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory


def _train(directory: Path) -> tuple[dict[str, Any], str]:
    """Train the use case in ``directory``; returns the train outputs and what it printed."""
    from modelcycle.core.lifecycle import UseCase

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outputs = UseCase(directory).train()
    return outputs, printed.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[dict[str, Any]]:
    """The resource use case trained once (short run): its directory, outputs and printed output."""
    with isolated_module_env(tmp_path_factory, data_dir):
        directory = _use_case(tmp_path_factory.mktemp("script") / "uc", hyperparameters=SHORT)
        outputs, printed = _train(directory)
        yield {"directory": directory, "outputs": outputs, "printed": printed}


def _job_root(trained: dict[str, Any], host: str = "algo-1") -> Path:
    job = trained["directory"] / ".modelcycle" / "jobs"
    (name,) = [p.name for p in job.iterdir()]
    return job / name / host / "opt" / "ml"


def test_the_script_trains_with_its_output_streamed(trained: dict[str, Any]) -> None:
    printed = trained["printed"]
    assert "Train Epoch: 1 [320/2000 (16%)]\tLoss: " in printed
    assert printed.count("Test set: Average loss: ") == 2
    assert "Saving the model." in printed
    assert trained["outputs"]["platform"] == "local"


def test_the_model_directory_has_sagemakers_layout_and_a_verified_manifest(trained: dict[str, Any]) -> None:
    from modelcycle.core.artifacts import read_manifest, verify_model

    outputs = trained["outputs"]
    model_dir = Path(outputs["model_dir"])
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()) == [
        "code/inference.py", "code/model_signature.json", "code/modelcycle.yaml", "code/pt_models.py",
        "code/requirements.txt", "code/train.py", "model.pth", "modelcycle.json"]
    with tarfile.open(outputs["archive"]) as tar:  # the archive is the directory (extracted from it)
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == sorted(
            p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    manifest = verify_model(model_dir)
    assert manifest == read_manifest(model_dir)
    assert manifest.script is not None and manifest.script.training_entry_point == "train.py"
    assert manifest.script.serving_entry_point == "inference.py"
    assert manifest.script.hyperparameters == {"epochs": 2, "batch-size": 64, "lr": 0.001, **SHORT}
    assert manifest.model_files == ["model.pth"]
    assert set(manifest.files) == {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")
                                   if p.is_file() and p.name != "modelcycle.json"}
    assert manifest.classes == [str(i) for i in range(10)]
    assert manifest.input_schema.shape == (1, 28, 28) and manifest.input_schema.dtype == "uint8"
    assert (manifest.preprocessing.scale, manifest.preprocessing.mean, manifest.preprocessing.std) == (1.0, (0.0,), (1.0,))
    assert manifest.dataset.name == "mnist" and manifest.dataset.train_records == 60000
    assert manifest.metrics == outputs["metrics"]
    import torch

    state = torch.load(model_dir / "model.pth", map_location="cpu")
    assert state["fc2.weight"].shape == (10, 50)  # the seed's ConvNet, as the script saved it


def test_a_changed_model_file_is_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    from modelcycle.core.artifacts import read_manifest, verify_files
    from modelcycle.core.errors import ArtifactError

    copy = tmp_path / "model"
    shutil.copytree(trained["outputs"]["model_dir"], copy)
    (copy / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    with pytest.raises(ArtifactError, match="inference.py does not match"):
        verify_files(copy, read_manifest(copy))


def test_metrics_are_parsed_from_the_log_one_mlflow_step_per_line(trained: dict[str, Any]) -> None:
    from modelcycle.core.tracking import mlflow_client, wait_for_pending_writes

    outputs = trained["outputs"]
    wait_for_pending_writes(trained["directory"] / ".modelcycle")
    client = mlflow_client(outputs["tracking_uri"])
    history = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(outputs["mlflow_run_id"], key),
                                                       key=lambda m: m.step)]
               for key in ("train_loss", "test_loss", "accuracy", "test_accuracy")}
    # a line every 5 batches of 64: 320 ... 1920 images into each epoch of 2,000
    assert [step for step, _ in history["train_loss"]] == [e * 2000 + b * 64 for e in (0, 1) for b in range(5, 31, 5)]
    assert [step for step, _ in history["accuracy"]] == [1, 2] == [step for step, _ in history["test_loss"]]
    assert history["accuracy"] == history["test_accuracy"]
    printed_results = [line for line in trained["printed"].splitlines() if line.startswith("Test set:")]
    counts = [line.split("Accuracy: ")[1].split(" ")[0] for line in printed_results]
    assert [value for _, value in history["accuracy"]] == [int(c.split("/")[0]) / 500 for c in counts]
    metrics = outputs["metrics"]
    assert metrics["accuracy"] == history["accuracy"][-1][1] and 0.5 < metrics["accuracy"] <= 1.0
    assert metrics["train_loss"] == history["train_loss"][-1][1]
    assert [entry["epoch"] for entry in outputs["history"]] == [1.0, 2.0]
    run = client.get_run(outputs["mlflow_run_id"])
    assert run.data.params["script.max-train-samples"] == "2000"
    assert run.data.tags["entry_point"] == "train.py"


def test_runs_sort_and_best_find_the_script_run(trained: dict[str, Any]) -> None:
    from modelcycle.core.experiments import find_run, list_runs
    from modelcycle.core.lifecycle import UseCase

    use_case = UseCase(trained["directory"])
    runs = list_runs(use_case, sort="accuracy")
    assert runs[0]["run_id"] == trained["outputs"]["run_id"]
    assert find_run(use_case, best="accuracy")["model_dir"] == trained["outputs"]["model_dir"]


def _idx_count(data: bytes) -> int:
    return int.from_bytes(data[4:8], "big")


def test_both_channels_hold_the_original_files_in_both_layouts(trained: dict[str, Any], data_dir: Path) -> None:
    root = _job_root(trained)
    for channel in ("training", "testing"):
        directory = root / "input" / "data" / channel
        for name in IDX_FILES:
            top = directory / f"{name}.gz"
            assert top.is_symlink() and top.resolve() == (data_dir / "mnist" / f"{name}.gz").resolve()
            raw = directory / "MNIST" / "raw"  # torchvision.datasets.MNIST(channel, download=False)
            assert (raw / f"{name}.gz").resolve() == top.resolve()
            unpacked = (raw / name).read_bytes()
            assert unpacked == gzip.decompress(top.read_bytes())
            assert _idx_count(unpacked) == (60000 if name.startswith("train") else 10000)


def test_hyperparameters_and_hosts_reach_the_script_as_sagemaker_passes_them(trained: dict[str, Any]) -> None:
    import json

    root = _job_root(trained)
    hyperparameters = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
    assert json.loads(hyperparameters["max-train-samples"]) == 2000
    assert json.loads(hyperparameters["sagemaker_program"]) == "train.py"
    assert json.loads((root / "input" / "config" / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert sorted(p.name for p in (root / "code").iterdir()) == [
        "inference.py", "model_signature.json", "modelcycle.yaml", "pt_models.py", "requirements.txt", "train.py"]


# -- failures ------------------------------------------------------------------------------------
def _script_use_case(directory: Path, script: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "train.py").write_text(script)
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump({
        "name": "failing-script", "framework": "pytorch", "data": {"dataset": "mnist"},
        "training": {"entry_point": "train.py", "hyperparameters": {"epochs": 1}}}))
    return directory


def _trained(directory: Path) -> bool:
    from modelcycle.core.state import StateStore

    return StateStore(directory / ".modelcycle").read().done("train")


def test_a_failing_script_leaves_the_use_case_untrained_with_its_last_20_lines(tmp_path: Path, data_dir: Path) -> None:
    from modelcycle.core.errors import StageError

    directory = _script_use_case(tmp_path / "uc", (
        "import sys\n"
        "print('arguments', sys.argv[1:])\n"
        "for i in range(1, 31):\n"
        "    print(f'line {i}')\n"
        "sys.exit(3)\n"))
    with pytest.raises(StageError) as failure:
        _train(directory)
    message = str(failure.value)
    assert "training script train.py failed" in message and "exited with code 3" in message
    tail = message.split("Last 20 lines of its output:\n")[1].split("\nFull log: ")[0]
    assert tail.splitlines() == [f"line {i}" for i in range(11, 31)]
    log = Path(message.rsplit("Full log: ", 1)[1].strip())
    assert log.is_file() and "arguments ['--epochs', '1']" in log.read_text()
    assert not _trained(directory)


def test_a_script_that_saves_nothing_names_sm_model_dir(tmp_path: Path, data_dir: Path) -> None:
    from modelcycle.core.errors import StageError

    directory = _script_use_case(tmp_path / "uc", "print('trained, but saved nothing')\n")
    with pytest.raises(StageError, match=r"training script train.py wrote nothing to SM_MODEL_DIR \(.*/opt/ml/model\)"):
        _train(directory)
    assert not _trained(directory)


def test_a_missing_script_or_source_dir_fails_when_the_config_is_loaded(tmp_path: Path) -> None:
    from modelcycle.core.config import load_config
    from modelcycle.core.errors import ConfigError

    directory = tmp_path / "uc"
    directory.mkdir()
    (directory / "modelcycle.yaml").write_text("name: uc\ntraining: {entry_point: missing.py}\n")
    with pytest.raises(ConfigError, match=rf"training.entry_point 'missing.py' not found: {directory}/missing.py"):
        load_config(directory)
    (directory / "modelcycle.yaml").write_text("name: uc\ntraining: {entry_point: train.py, source_dir: src}\n")
    with pytest.raises(ConfigError, match=rf"training.source_dir 'src' is not a directory \({directory}/src\)"):
        load_config(directory)
    (directory / "src").mkdir()
    (directory / "src" / "train.py").write_text("")
    assert load_config(directory).training.source_dir == "src"
    (directory / "modelcycle.yaml").write_text("name: uc\ntraining: {entry_point: ../train.py, source_dir: src}\n")
    with pytest.raises(ConfigError, match="must be a path inside training.source_dir"):
        load_config(directory)


def test_several_hosts_need_no_backend_setting_in_script_mode(tmp_path: Path) -> None:
    from modelcycle.core.config import TrainingConfig

    assert TrainingConfig(entry_point="train.py", instance_count=2).backend is None  # the script decides
    with pytest.raises(ValueError, match="needs a distributed backend"):
        TrainingConfig(instance_count=2)


@pytest.mark.slow
def test_two_hosts_over_gloo_reach_975_percent_in_two_epochs(tmp_path: Path, data_dir: Path) -> None:
    directory = _use_case(tmp_path / "uc", instance_count=2, hyperparameters={"backend": "gloo", "batch-size": 32})
    outputs, printed = _train(directory)
    assert "'gloo' backend on 2 nodes" in printed
    assert outputs["metrics"]["accuracy"] >= 0.975, outputs["metrics"]
    assert [entry["epoch"] for entry in outputs["history"]] == [1.0, 2.0]
    job = directory / ".modelcycle" / "jobs"
    assert sorted(p.name for p in next(job.iterdir()).iterdir() if p.name.startswith("algo")) == ["algo-1", "algo-2"]
    assert np.isfinite(outputs["metrics"]["train_loss"])
