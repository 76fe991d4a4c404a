"""The installable third-party adapter in tests/resources: found, conformant, whole lifecycle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelcycle.platforms.local.endpoints import process_alive
from modelcycle.testing import FrameworkConformance


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelcycle.cli", *args], capture_output=True, text=True, timeout=300)


def test_the_installed_adapter_is_listed_with_its_distribution_and_version() -> None:
    listed = json.loads(_cli("plugins", "--json").stdout)
    adapter = [p for p in listed if p["name"] == "sklearn-mlp"]
    assert adapter, "install it: pip install tests/resources/modelcycle-example-adapter"
    assert adapter[0]["kind"] == "framework"
    assert adapter[0]["distribution"] == "modelcycle-example-adapter"
    assert adapter[0]["version"] == "0.1.0"


class TestExampleAdapterConformance(FrameworkConformance):
    framework = "sklearn-mlp"
    model_options = {"hidden_units": 32}


def test_switching_framework_in_the_config_runs_the_whole_cli_lifecycle(tmp_path: Path, data_dir: Path) -> None:
    directory = tmp_path / "adapter-uc"
    assert _cli("init", str(directory), "--framework", "pytorch", "--example", "mnist").returncode == 0
    config = yaml.safe_load((directory / "modelcycle.yaml").read_text())
    config.update(framework="sklearn-mlp", model={"hidden_units": 64})
    config["data"].update(train_limit=4000, test_limit=1000)
    config["hyperparameters"]["epochs"] = 2
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config))
    pid = None
    try:
        train = _cli("-C", str(directory), "train", "--set", "hyperparameters.momentum=0.5")
        assert train.returncode == 0, train.stderr
        assert "Test set: Average loss:" in train.stdout
        # the adapter declares the shared hyperparameters it does not use; setting them warns
        assert "framework 'sklearn-mlp' ignores hyperparameters lr_schedule, momentum, optimizer" in train.stderr
        assert _cli("-C", str(directory), "deploy").returncode == 0
        score = _cli("-C", str(directory), "score", "--samples", "20")
        assert score.returncode == 0, score.stderr
        assert int(score.stdout.split("(")[-1].split("/")[0]) >= 15, score.stdout
        status = json.loads(_cli("-C", str(directory), "status", "--json").stdout)
        pid = status["endpoint"]["pid"]
        assert status["framework"] == "sklearn-mlp" and status["deployed"]
        assert status["metrics"]["test_accuracy"] > 0.85
        manifest = json.loads((Path(status["model_archive"]).parent / "model" / "modelcycle.json").read_text())
        assert manifest["framework"] == "sklearn-mlp" and manifest["framework_version"] == "0.1.0"
    finally:
        cleanup = _cli("-C", str(directory), "cleanup")
    assert "'serving': 1" in cleanup.stdout
    assert pid is not None and not process_alive(pid)


def test_a_pytorch_artifact_loaded_as_the_adapter_names_its_maker(trained_model_dir: Path) -> None:
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.errors import ArtifactError

    with pytest.raises(ArtifactError, match="made by framework plugin 'pytorch'"):
        read_manifest(trained_model_dir, expected_framework="sklearn-mlp")
