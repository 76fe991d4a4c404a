"""The training entry point: SageMaker's container contract, and sensible defaults without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import write_use_case

from modelcycle.core.entrypoint import (
    ENTRY_SCRIPT,
    channel_files,
    job_hyperparameters,
    parse_container_env,
    shipped_config,
    write_source_dir,
)


def test_the_contract_is_read_from_sm_variables_and_hyphenated_arguments(tmp_path: Path) -> None:
    environ = {
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data/algo-2",
        "SM_OUTPUT_DIR": "/opt/ml/output",
        "SM_CHANNEL_TRAINING": "/opt/ml/input/data/training",
        "SM_CHANNEL_TESTING": "/opt/ml/input/data/testing",
        "SM_HOSTS": '["algo-1","algo-2"]',
        "SM_CURRENT_HOST": "algo-2",
        "SM_NUM_GPUS": "0",
        "SM_HPS": '{"epochs": 3, "batch-size": 32, "backend": "gloo", "sagemaker_program": "train.py"}',
        "SM_NETWORK_INTERFACE_NAME": "eth0",
        "TRAINING_JOB_NAME": "mnist-2026",
    }
    env = parse_container_env(["--epochs", "2", "--learning-rate", "0.01", "--dropout=0.2"], environ)
    assert (env.rank, env.world_size, env.current_host) == (1, 2, "algo-2")
    assert env.model_dir == Path("/opt/ml/model")
    assert env.output_data_dir == Path("/opt/ml/output/data/algo-2")
    assert env.channels == {"training": Path("/opt/ml/input/data/training"), "testing": Path("/opt/ml/input/data/testing")}
    # the command line wins over SM_HPS; sagemaker_* framework parameters are not hyperparameters
    assert env.hyperparameters == {"epochs": 2, "batch-size": 32, "backend": "gloo", "learning-rate": 0.01, "dropout": 0.2}
    assert (env.job_name, env.network_interface, env.in_container) == ("mnist-2026", "eth0", True)


def test_without_any_sm_variable_it_falls_back_to_local_defaults() -> None:
    env = parse_container_env([], {})
    assert (env.hosts, env.current_host, env.rank, env.world_size, env.num_gpus) == (["algo-1"], "algo-1", 0, 1, 0)
    assert env.model_dir == Path("outputs/model") and env.output_data_dir == Path("outputs/data")
    assert env.channels == {} and env.hyperparameters == {} and env.in_container is False


def test_the_tensorflow_estimators_s3_model_dir_argument_does_not_replace_sm_model_dir() -> None:
    env = parse_container_env(["--model_dir", "s3://bucket/job/model"], {"SM_MODEL_DIR": "/opt/ml/model"})
    assert env.model_dir == Path("/opt/ml/model")


def test_the_source_dir_ships_the_resolved_config_without_secrets_or_local_paths(tmp_path: Path, data_dir: Path) -> None:
    from modelcycle.core.config import load_config

    directory = write_use_case(tmp_path / "uc", name="ship", serving={"token": "s3cret-token-0123456789"},
                               data={"dataset": "mnist", "path": str(data_dir / "mnist"), "train_limit": 100})
    config = load_config(directory, {"hyperparameters.epochs": 3})
    files = write_source_dir(config, tmp_path / "source")
    assert sorted(p.name for p in files) == ["modelcycle-0.1.0-py3-none-any.whl", "modelcycle.yaml", "requirements.txt", ENTRY_SCRIPT]
    text = (tmp_path / "source" / "modelcycle.yaml").read_text()
    assert "s3cret-token-0123456789" not in text
    shipped = yaml.safe_load(text)
    assert shipped["hyperparameters"]["epochs"] == 3  # overrides travel with the job
    assert shipped["data"] == {**shipped["data"], "path": None, "train_limit": 100}
    assert "serving" not in shipped and "monitoring" not in shipped  # only what training needs travels
    assert shipped == shipped_config(config)
    requirements = (tmp_path / "source" / "requirements.txt").read_text().split()
    assert requirements[0].startswith("modelcycle==") and "torch" not in " ".join(requirements).replace("torchinfo", "")
    assert job_hyperparameters(config)["batch-size"] == 64


def test_channels_split_train_and_test_files(data_dir: Path) -> None:
    channels = channel_files("mnist", data_dir / "mnist")
    assert [p.name for p in channels["training"]] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert [p.name for p in channels["testing"]] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "modelcycle.core.entrypoint", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=600)


def test_the_module_trains_outside_a_container_with_cli_hyperparameters(small_use_case: Path) -> None:
    done = _run(["--epochs", "1", "--batch-size", "100", "--hidden-channels", "10", "--unknown-knob", "3"], small_use_case)
    assert done.returncode == 0, done.stderr
    assert "ignoring unknown hyperparameters unknown-knob" in done.stderr
    assert "Test set: Average loss:" in done.stdout
    model = small_use_case / "outputs" / "model"
    assert sorted(p.name for p in model.iterdir()) == ["code", "model.pth", "modelcycle.json"]
    manifest = json.loads((model / "modelcycle.json").read_text())
    assert manifest["hyperparameters"]["batch_size"] == 100 and manifest["model"]["hidden_channels"] == 10
    record = json.loads((small_use_case / "outputs" / "data" / "metrics.json").read_text())
    assert record["metrics"]["test_accuracy"] == manifest["metrics"]["test_accuracy"]
    assert record["ignored_hyperparameters"] == ["unknown-knob"]


def test_a_failure_exits_non_zero_and_writes_the_failure_file(small_use_case: Path, tmp_path: Path) -> None:
    output = tmp_path / "output"
    done = _run(["--epochs", "0"], small_use_case, {"SM_OUTPUT_DIR": str(output), "SM_MODEL_DIR": str(tmp_path / "m")})
    assert done.returncode == 2
    assert "hyperparameters.epochs" in done.stderr
    assert (output / "failure").read_text().startswith("ConfigError: invalid configuration")


def test_two_hosts_without_a_backend_are_refused(small_use_case: Path, tmp_path: Path) -> None:
    done = _run([], small_use_case, {"SM_HOSTS": '["algo-1","algo-2"]', "SM_CURRENT_HOST": "algo-1",
                                     "SM_MODEL_DIR": str(tmp_path / "m"), "SM_OUTPUT_DIR": str(tmp_path / "o")})
    assert done.returncode == 2
    assert "backend=gloo" in done.stderr
