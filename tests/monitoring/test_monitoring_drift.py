"""The drift statistics against scipy, and the drift monitor on real traffic through a real MNIST
model: clean MNIST test images stay quiet; Fashion-MNIST, rotated and noised MNIST raise
violations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.ndimage import rotate
from scipy.spatial.distance import jensenshannon

from modelcycle.core.config import DriftMonitorConfig
from modelcycle.core.monitoring.drift import (
    drift_metrics,
    input_statistics,
    jensen_shannon_distance,
    ks_pvalue,
    ks_statistic,
    make_baseline,
    total_variation,
)
from modelcycle.core.monitoring.errors import InsufficientDataError
from modelcycle.core.monitoring.thresholds import effective_thresholds, find_violations

DEFAULTS = effective_thresholds("drift", DriftMonitorConfig().thresholds)


def test_statistics_equal_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=3000), rng.normal(0.1, 1.2, size=700)
    reference = stats.ks_2samp(a, b, method="asymp")
    assert ks_statistic(a, b) == pytest.approx(reference.statistic, abs=1e-12)
    assert ks_pvalue(ks_statistic(a, b), len(a), len(b)) == pytest.approx(reference.pvalue, rel=0.1, abs=1e-4)
    tied = rng.integers(0, 20, 500), rng.integers(0, 25, 800)  # ties, as ink fractions have
    assert ks_statistic(*tied) == pytest.approx(stats.ks_2samp(*tied).statistic, abs=1e-12)
    p, q = rng.integers(0, 100, 10), rng.integers(0, 100, 10)
    q[3] = 0
    assert jensen_shannon_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert jensen_shannon_distance(p, p) == 0.0
    assert total_variation([1, 0], [0, 1]) == 1.0 and total_variation([1, 1], [2, 2]) == 0.0


class Model:
    """The session's small trained model, scoring raw images in-process, plus the baseline the
    monitor records (2,000 random held-out test images, seed 0)."""

    def __init__(self, model_dir: Path) -> None:
        from modelcycle.core.datasets import load_dataset
        from modelcycle.core.serving.pipeline import InferencePipeline

        self.pipeline = InferencePipeline(model_dir)
        self.mnist, self.fashion = load_dataset("mnist"), load_dataset("fashion-mnist")
        test = self.mnist.test
        index = np.sort(np.random.default_rng(0).choice(len(test), 2000, replace=False))
        self.baseline = make_baseline(self.predict(test.images[index]), test.images[index], test.labels[index])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.pipeline.predict(images.reshape(-1, 1, 28, 28).astype(np.float32))

    def window(self, images: np.ndarray) -> dict[str, np.ndarray]:
        probabilities = self.predict(images)
        mean, ink = input_statistics(images)
        return {"prediction": probabilities.argmax(axis=1), "confidence": probabilities.max(axis=1).astype(np.float64),
                "mean_intensity": mean, "ink_fraction": ink}

    def drift(self, images: np.ndarray) -> tuple[dict[str, float], set[str]]:
        result = drift_metrics(self.baseline, self.window(images), min_samples=100)
        return result["metrics"], {v["metric_id"] for v in find_violations(result["metrics"], DEFAULTS)}


@pytest.fixture(scope="module")
def model(trained_model_dir: Path) -> Model:
    return Model(trained_model_dir)


@pytest.mark.parametrize("window", [slice(0, 2000), slice(0, 300), slice(5000, 7000), slice(8000, 10000)])
def test_clean_mnist_traffic_raises_no_drift(model: Model, window: slice) -> None:
    metrics, violated = model.drift(model.mnist.test.images[window])
    assert violated == set(), metrics


def test_fashion_mnist_traffic_drifts_on_every_statistic(model: Model) -> None:
    metrics, violated = model.drift(model.fashion.test.images[:1000])
    assert violated == {"prediction_drift", "confidence_drift", "mean_intensity_drift", "ink_fraction_drift"}, metrics
    assert metrics["mean_intensity_drift"] > 0.5


def test_noised_and_rotated_mnist_drift(model: Model) -> None:
    images = model.mnist.test.images[:1000]
    rng = np.random.default_rng(1)
    noised = np.clip(images + rng.normal(0, 60, images.shape), 0, 255).astype(np.uint8)
    metrics, violated = model.drift(noised)
    assert "mean_intensity_drift" in violated, metrics
    rotated = np.stack([rotate(image, 45, reshape=False, order=1) for image in images]).astype(np.uint8)
    metrics, violated = model.drift(rotated)
    assert {"prediction_drift", "confidence_drift"} <= violated, metrics
    assert "mean_intensity_drift" not in violated  # a rotation keeps the ink: the outputs show it


def test_the_baseline_and_the_details(model: Model) -> None:
    baseline: dict[str, Any] = model.baseline
    assert baseline["records"] == 2000 and baseline["classes"] == 10 and sum(baseline["class_counts"]) == 2000
    assert 0.5 < baseline["accuracy"] < 1 and baseline["confidence"] == sorted(baseline["confidence"])
    result = drift_metrics(baseline, model.window(model.mnist.test.images[:500]))
    details = result["details"]
    assert sum(details["confidence_histogram"]["current"]) == 500
    assert sum(details["mean_intensity_histogram"]["baseline"]) == 2000
    assert set(details["p_values"]) == {"mean_intensity_drift", "ink_fraction_drift"}
    assert result["records"] == {"payload": 500, "baseline": 2000}


def test_drift_needs_min_samples(model: Model) -> None:
    with pytest.raises(InsufficientDataError, match=r"at least 100 payload records \(min_samples\) and has 40"):
        drift_metrics(model.baseline, model.window(model.mnist.test.images[:40]), min_samples=100)
