"""The quality monitor against scikit-learn on a real model's predictions, the
``min_feedback_data_size`` refusal, thresholds and violations, and the threshold config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn import metrics as sk

from conftest import write_use_case
from modelcycle.core.config import MonitoringConfig, load_config
from modelcycle.core.errors import ConfigError
from modelcycle.core.monitoring.errors import InsufficientDataError
from modelcycle.core.monitoring.quality import check_size, quality_metrics
from modelcycle.core.monitoring.thresholds import effective_thresholds, find_violations


@pytest.fixture(scope="module")
def predictions(trained_model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The small trained model's probabilities on 2,000 real MNIST test images, and the labels."""
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.serving.pipeline import InferencePipeline

    test = load_dataset("mnist").test.take(2000)
    pipeline = InferencePipeline(trained_model_dir)
    probabilities = pipeline.predict(test.images.reshape(-1, 1, 28, 28).astype(np.float32))
    return probabilities.astype(np.float32), test.labels


def _weighted_fpr(labels: np.ndarray, predicted: np.ndarray) -> float:
    matrices = sk.multilabel_confusion_matrix(labels, predicted, labels=range(10))
    fpr = np.array([m[0, 1] / (m[0, 1] + m[0, 0]) for m in matrices])
    support = np.bincount(labels, minlength=10)
    return float((fpr * support).sum() / support.sum())


def _sklearn(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    predicted = probabilities.argmax(axis=1)
    kw = {"average": "weighted", "labels": list(range(10)), "zero_division": 0}
    return {
        "accuracy": sk.accuracy_score(labels, predicted),
        "weighted_precision": sk.precision_score(labels, predicted, **kw),
        "weighted_recall": sk.recall_score(labels, predicted, **kw),
        "weighted_f_measure": sk.f1_score(labels, predicted, **kw),
        "weighted_true_positive_rate": sk.recall_score(labels, predicted, **kw),
        "weighted_false_positive_rate": _weighted_fpr(labels, predicted),
        "log_loss": sk.log_loss(labels, probabilities.astype(np.float64), labels=list(range(10))),
    }


@pytest.mark.parametrize("count", [2000, 137])
def test_metrics_equal_scikit_learn_on_real_predictions(predictions, count: int) -> None:
    probabilities, labels = predictions[0][:count], predictions[1][:count]
    result = quality_metrics(labels, probabilities.argmax(axis=1), probabilities)
    expected = _sklearn(labels, probabilities)
    assert set(result["metrics"]) == set(expected)
    for name, value in expected.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-9), name
    assert np.array_equal(result["confusion_matrix"], sk.confusion_matrix(labels, probabilities.argmax(axis=1), labels=range(10)))
    assert result["records"] == count and result["classes"] == 10


def test_metrics_with_absent_and_never_predicted_classes(predictions) -> None:
    probabilities, labels = predictions
    keep = labels < 5  # classes 5-9 absent from the labels; some predicted anyway
    probabilities, labels = probabilities[keep], labels[keep]
    result = quality_metrics(labels, probabilities.argmax(axis=1), probabilities)
    for name, value in _sklearn(labels, probabilities).items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-9), name


def test_quality_is_refused_below_min_feedback_data_size() -> None:
    check_size(50, 50)
    with pytest.raises(InsufficientDataError, match=r"at least 50 feedback records \(min_feedback_data_size\) and has 12") as info:
        check_size(12, 50)
    assert (info.value.have, info.value.need) == (12, 50)
    assert "log-feedback --samples 38" in str(info.value)


def test_lower_and_upper_limits_yield_violations(predictions) -> None:
    probabilities, labels = predictions
    metrics = quality_metrics(labels, probabilities.argmax(axis=1), probabilities)["metrics"]
    accuracy = metrics["accuracy"]
    above = [{"metric_id": "accuracy", "type": "lower_limit", "value": accuracy + 0.01}]
    below = [{"metric_id": "accuracy", "type": "lower_limit", "value": accuracy - 0.01}]
    assert find_violations(metrics, above) == [{"metric_id": "accuracy", "type": "lower_limit", "limit": accuracy + 0.01, "value": accuracy}]
    assert find_violations(metrics, below) == []
    loss = [{"metric_id": "log_loss", "type": "upper_limit", "value": metrics["log_loss"] / 2}]
    assert [v["metric_id"] for v in find_violations(metrics, loss)] == ["log_loss"]
    # configured thresholds replace the defaults per (metric_id, type); the others stay
    merged = effective_thresholds("quality", [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.5}])
    assert merged == [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.5}]
    drift = effective_thresholds("drift", MonitoringConfig.model_validate(
        {"drift": {"thresholds": [{"metric_id": "prediction_drift", "value": 0.3}]}}).drift.thresholds)
    assert {t["metric_id"]: t["value"] for t in drift} == {
        "prediction_drift": 0.3, "confidence_drift": 0.1, "mean_intensity_drift": 0.25, "ink_fraction_drift": 0.25,
        "feature_drift": 0.25}


def _config_with(tmp_path: Path, monitoring: dict) -> Path:
    return write_use_case(tmp_path / "uc", name="thresholds", monitoring=monitoring)


def test_the_mlmonitor_threshold_key_is_a_config_error(tmp_path: Path) -> None:
    directory = _config_with(tmp_path, {"quality": {"enabled": True, "min_feedback_data_size": 10, "thresholds": [
        {"metric_id": "accuracy", "type": "lower_limit", "lower_limit": 0.80}]}})
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    message = str(info.value)
    assert "monitoring.quality.thresholds.0" in message
    assert "the limit goes under the key 'value'" in message and "lower_limit: 0.8" in message


@pytest.mark.parametrize("threshold, expected", [
    ({"metric_id": "accuracy", "type": "lower_limit", "value": 0.8, "lower_limit": 0.8}, "monitoring.quality.thresholds.0.lower_limit: unknown key"),
    ({"metric_id": "accuracy", "type": "minimum", "value": 0.8}, "monitoring.quality.thresholds.0.type"),
    ({"metric_id": "acc", "type": "lower_limit", "value": 0.8}, "monitoring.quality.thresholds.0.metric_id"),
    ({"metric_id": "accuracy", "type": "lower_limit"}, "monitoring.quality.thresholds.0.value: required key is missing"),
])
def test_malformed_thresholds_are_refused(tmp_path: Path, threshold: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(_config_with(tmp_path, {"quality": {"thresholds": [threshold]}}))


def test_a_valid_monitoring_section_loads(tmp_path: Path) -> None:
    section = {
        "quality": {"enabled": True, "min_feedback_data_size": 20,
                    "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.9}]},
        "drift": {"min_samples": 50, "thresholds": [{"metric_id": "confidence_drift", "type": "upper_limit", "value": 0.2}]},
        "payload": {"sampling_percentage": 25},
    }
    config = load_config(_config_with(tmp_path, section)).monitoring
    assert config.quality.thresholds[0].value == 0.9 and config.drift.min_samples == 50
    assert config.payload.sampling_percentage == 25 and config.payload.enabled is True
    with pytest.raises(ConfigError, match="two thresholds for accuracy lower_limit"):
        load_config(_config_with(tmp_path, {"quality": {"thresholds": [section["quality"]["thresholds"][0]] * 2}}))
    with pytest.raises(ConfigError, match="monitoring.payload.sampling_percentage"):
        load_config(_config_with(tmp_path, {"payload": {"sampling_percentage": 150}}))
    assert yaml.safe_load((tmp_path / "uc" / "modelcycle.yaml").read_text())["monitoring"]["payload"]["sampling_percentage"] == 150
