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


def _write(tmp_path: Path, signature: dict[str, Any]) -> Path:
    path = tmp_path / signature.get("source_dir", "use_case") / "model_signature.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(signature))
    return path


def test_the_mlmonitor_pytorch_signature_becomes_a_valid_use_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelcycle.core.config import load_config

    path = _write(tmp_path, MNIST_PT)
    assert main(["import-signature", str(path)]) == 0
    out = capsys.readouterr().out
    written = yaml.safe_load((path.parent / "modelcycle.yaml").read_text())
    assert written["framework"] == "pytorch" and written["name"] == "mnist_pt"
    assert written["description"].startswith("Hand written digit detection")
    assert written["data"] == {"dataset": "mnist"}
    assert written["hyperparameters"] == {"batch_size": 128, "epochs": 2, "learning_rate": 1e-3, "log_interval": 100}
    assert written["training"] == {"platform": "sagemaker", "instance_type": "ml.c4.xlarge",
                                   "prefix": "DEMO-mnist-mlmonitor", "base_job_name": "sm-mnist-pytorch"}
    assert written["serving"] == {"platform": "sagemaker", "instance_type": "ml.c4.xlarge"}
    # the threshold's limit moved under "value" (mlmonitor's lower_limit key is ignored by OpenScale)
    assert written["monitoring"] == {"quality": {"enabled": True, "min_feedback_data_size": 10,
                                                 "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.8}]}}
    for dropped in ("wml_runtime (empty)", "fairness_monitor (disabled)", "explain_monitor", "mrm_monitor",
                    "custom_monitor", "drift_monitor", "train_script (pytorch_train.py)", "1.9.0/py38",
                    "fetch_data_function"):
        assert dropped in out, dropped
    assert "the config validates" in out
    config = load_config(path.parent)
    assert config.monitoring.quality.thresholds[0].value == 0.8
    assert config.training.platform == "sagemaker" and config.hyperparameters.learning_rate == 1e-3


def test_a_keras_signature_with_unknown_keys_says_what_it_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signature = copy.deepcopy(MNIST_PT)
    signature["source_dir"] = "use_case_mnist_tf"
    signature["aws_runtime"].update(train_framework="tensorflow", train_framework_version="2.8.0", train_py_version="py39")
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
                    "wml_runtime (set)", "extra_section: unknown key"):
        assert dropped in out, dropped


def test_an_existing_config_is_not_overwritten_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, MNIST_PT)
    (path.parent / "modelcycle.yaml").write_text("name: mine\n")
    assert main(["import-signature", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (path.parent / "modelcycle.yaml").read_text() == "name: mine\n"
    assert main(["import-signature", str(path), "--force"]) == 0
