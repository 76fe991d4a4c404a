"""``modelcycle import-signature``: mlmonitor's model_signature.json → a valid modelcycle.yaml."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcycle.cli import main

#: mlmonitor's use_case_mnist_pt/model_signature.json, values as in the file.
MNIST_PT: dict[str, Any] = {
    "__class__": "SageMakerModelConfig",
    "signature": {"feature_columns": None, "class_label": None, "prediction_field": "prediction",
                  "probability_fields": ["probability"], "categorical_columns": None, "problem_type": "multiclass",
                  "data_type": "unstructured_image",
                  "description": "Hand written digit detection CNN model using Pytorch framework"},
    "datasets": {"data_dir": "mnist", "training_data": "mnist", "validation_data": "mnist", "test_data": "mnist",
                 "fetch_data_function": "generate_data"},
    "aws_runtime": {"train_script": "pytorch_train.py", "inference_script": "pytorch_inference.py",
                    "train_framework": "pytorch", "train_framework_version": "1.9.0", "train_py_version": "py38",
                    "inference_framework": "pytorch", "inference_framework_version": "1.9.0",
                    "inference_py_version": "py38", "train_instance": "ml.c4.xlarge",
                    "inference_instance": "ml.c4.xlarge", "prefix": "DEMO-mnist-mlmonitor",
                    "job_name": "sm-mnist-pytorch", "serializer": "json", "deserializer": "json"},
    "wml_runtime": {},
    "hyperparameters": {"batch-size": 128, "epochs": 2, "learning-rate": 1e-3, "log-interval": 100},
    "quality_monitor": {"enabled": True, "parameters": {"min_feedback_data_size": 10},
                        "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "lower_limit": 0.80}]},
    "fairness_monitor": {"enabled": False}, "drift_monitor": {"enabled": False}, "explain_monitor": {"enabled": False},
    "mrm_monitor": {"enabled": False}, "custom_monitor": {"enabled": False}, "source_dir": "use_case_mnist_pt",
}


#: Seed-style scripts (argparse hyperparameters, SM_* variables; the four handlers).
TRAIN_SCRIPT = """import argparse, os
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--model-dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
args, _ = parser.parse_known_args()
"""
INFERENCE_SCRIPT = "def model_fn(model_dir): ...\ndef input_fn(body, content_type): ...\n" \
    "def predict_fn(data, model): ...\ndef output_fn(prediction, accept): ...\n"


def _write(tmp_path: Path, signature: dict[str, Any], scripts: bool = True) -> Path:
    """The signature in its use case directory, with the scripts it names beside it (``scripts``)."""
    path = tmp_path / str(signature.get("source_dir", "use_case")).strip("/") / "model_signature.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(signature))
    runtime = signature.get("aws_runtime") or {}
    for key, text in (("train_script", TRAIN_SCRIPT), ("inference_script", INFERENCE_SCRIPT)):
        if scripts and runtime.get(key):
            (path.parent / runtime[key]).write_text(text)
    return path


def test_the_mlmonitor_pytorch_signature_becomes_a_script_mode_use_case(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from modelcycle.core.config import load_config

    path = _write(tmp_path, MNIST_PT)
    assert main(["import-signature", str(path)]) == 0
    out = capsys.readouterr().out
    written = yaml.safe_load((path.parent / "modelcycle.yaml").read_text())
    assert written["framework"] == "pytorch" and written["name"] == "mnist_pt"
    assert written["description"].startswith("Hand written digit detection")
    assert written["data"] == {"dataset": "mnist"}
    assert "hyperparameters" not in written and "model" not in written  # the script takes its own arguments
    # the seed's scripts run unchanged, with the hyperparameters as the script expects them
    assert written["training"] == {
        "platform": "sagemaker", "entry_point": "pytorch_train.py", "source_dir": ".",
        "hyperparameters": {"batch-size": 128, "epochs": 2, "learning-rate": 1e-3, "log-interval": 100},
        "instance_type": "ml.c4.xlarge", "prefix": "DEMO-mnist-mlmonitor", "base_job_name": "sm-mnist-pytorch"}
    assert written["serving"] == {"platform": "sagemaker", "entry_point": "pytorch_inference.py",
                                  "instance_type": "ml.c4.xlarge"}
    for kept in ("train_script (pytorch_train.py) → training.entry_point",
                 "hyperparameters → training.hyperparameters (batch-size, epochs, learning-rate, log-interval)",
                 "inference_script (pytorch_inference.py) → serving.entry_point"):
        assert kept in out.split("dropped:")[0], kept
    assert "train_script" not in out.split("dropped:")[1] and "inference_script" not in out.split("dropped:")[1]
    # the threshold's limit moved under "value" (mlmonitor's lower_limit key is ignored by OpenScale)
    assert written["monitoring"] == {"quality": {"enabled": True, "min_feedback_data_size": 10,
                                                 "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.8}]}}
    for dropped in ("wml_runtime (empty)", "fairness_monitor (disabled)", "explain_monitor", "mrm_monitor",
                    "custom_monitor", "drift_monitor", "1.9.0/py38", "fetch_data_function"):
        assert dropped in out, dropped
    assert "the config validates" in out
    config = load_config(path.parent)
    assert config.monitoring.quality.thresholds[0].value == 0.8
    assert config.training.platform == "sagemaker" and config.training.script_mode
    assert config.training.entry_point == "pytorch_train.py" and config.training.hyperparameters["learning-rate"] == 1e-3
    assert (path.parent / config.training.source_dir / config.training.entry_point).read_text() == TRAIN_SCRIPT
    assert config.serving.entry_point == "pytorch_inference.py"


def test_the_mlmonitor_tensorflow_signature_imported_elsewhere_points_back_at_its_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 001's use_case_mnist_tf: tf_cnn_train.py / tf_cnn_inference.py, mlmonitor's system arguments."""
    from modelcycle.core.config import load_config

    signature = copy.deepcopy(MNIST_PT)
    signature["source_dir"] = "/use_case_mnist_tf"
    signature["aws_runtime"].update(train_script="tf_cnn_train.py", inference_script="tf_cnn_inference.py",
                                    train_framework="tensorflow", train_framework_version="2.8.0",
                                    inference_framework="tensorflow", job_name="sm-mnist-cnn-tf-keras")
    signature["hyperparameters"] = {"ibm-key-name": "IBM_API_KEY_MLOPS", "catalog-id": "ecee7437",
                                    "model-entry-id": "8881ef6b", "batch-size": 128, "epochs": 5}
    path = _write(tmp_path, signature)
    target = tmp_path / "converted" / "keras"
    assert main(["import-signature", str(path), "-o", str(target)]) == 0
    out = capsys.readouterr().out
    config = load_config(target)
    assert config.framework == "keras" and config.name == "mnist_tf"
    assert config.training.source_dir == "../../use_case_mnist_tf"
    assert (target / config.training.source_dir / "tf_cnn_train.py").read_text() == TRAIN_SCRIPT
    assert config.training.entry_point == "tf_cnn_train.py" and config.serving.entry_point == "tf_cnn_inference.py"
    assert config.training.hyperparameters == {"batch-size": 128, "epochs": 5}
    for dropped in ("hyperparameters.ibm-key-name", "hyperparameters.catalog-id", "hyperparameters.model-entry-id"):
        assert dropped in out, dropped


@pytest.mark.parametrize("missing", ["train_script", "inference_script"])
def test_a_script_missing_beside_the_signature_is_named_with_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    path = _write(tmp_path, MNIST_PT)
    (path.parent / MNIST_PT["aws_runtime"][missing]).unlink()
    assert main(["import-signature", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"aws_runtime.{missing} '{MNIST_PT['aws_runtime'][missing]}' is not in {path.parent.resolve()}" in err
    assert not (path.parent / "modelcycle.yaml").exists()


def test_a_keras_signature_with_unknown_keys_says_what_it_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signature = copy.deepcopy(MNIST_PT)
    signature["source_dir"] = "use_case_mnist_tf"
    signature["aws_runtime"].update(train_framework="tensorflow", train_framework_version="2.8.0", train_py_version="py39")
    del signature["aws_runtime"]["train_script"]  # no script of its own: modelcycle's keras plugin trains
    signature["hyperparameters"] = {"epochs": 5, "batch-size": 128, "dense-units": 64, "ibm-key-name": "IBM_KEYS", "mystery": 1}
    signature["explain_monitor"] = {"enabled": True}
    signature["wml_runtime"] = {"train_module": "train", "inference_instance": "runtime-22.2-py3.10"}
    signature["extra_section"] = {"x": 1}
    path = _write(tmp_path, signature)
    target = tmp_path / "converted"
    assert main(["import-signature", str(path), "-o", str(target)]) == 0
    out = capsys.readouterr().out
    written = yaml.safe_load((target / "modelcycle.yaml").read_text())
    assert written["framework"] == "keras" and written["capture"] == "autolog"
    assert written["model"] == {"dense_units": 64}
    assert written["hyperparameters"] == {"epochs": 5, "batch_size": 128}
    for dropped in ("hyperparameters.ibm-key-name", "hyperparameters.mystery", "explain_monitor (enabled)",
                    "wml_runtime (set)", "extra_section: unknown key", "inference_script (pytorch_inference.py)"):
        assert dropped in out, dropped


def test_an_existing_config_is_not_overwritten_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, MNIST_PT)
    (path.parent / "modelcycle.yaml").write_text("name: mine\n")
    assert main(["import-signature", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (path.parent / "modelcycle.yaml").read_text() == "name: mine\n"
    assert main(["import-signature", str(path), "--force"]) == 0
