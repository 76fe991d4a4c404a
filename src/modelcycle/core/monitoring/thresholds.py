"""Thresholds (OpenScale's ``{metric_id, type: lower_limit|upper_limit, value}``) and violations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_THRESHOLDS", "effective_thresholds", "find_violations"]

#: Defaults per monitor; configured thresholds replace them per (metric_id, type).
DEFAULT_THRESHOLDS: dict[str, list[dict[str, Any]]] = {
    # OpenScale's default quality limit
    "quality": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.8}],
    # distances in [0, 1], calibrated on real MNIST traffic through the seed ConvNet (bench and
    # tests): clean windows of 200-2,000 test images stay below 0.11 (prediction), 0.07
    # (confidence) and 0.17 (input KS: the two halves of the MNIST test set, written by
    # different people, already differ by KS ~0.12 in mean intensity); Fashion-MNIST reaches
    # 0.45 / 0.7 / 0.6, 45-degree rotations 0.19-0.3 / 0.4-0.65, heavy noise an input KS of 0.6.
    "drift": [
        {"metric_id": "prediction_drift", "type": "upper_limit", "value": 0.15},
        {"metric_id": "confidence_drift", "type": "upper_limit", "value": 0.1},
        {"metric_id": "mean_intensity_drift", "type": "upper_limit", "value": 0.25},
        {"metric_id": "ink_fraction_drift", "type": "upper_limit", "value": 0.25},
        # tabular records: the largest per-feature distance (KS, or Jensen-Shannon for a
        # categorical feature); a feature shifted by 2 standard deviations reaches KS ~0.68
        {"metric_id": "feature_drift", "type": "upper_limit", "value": 0.25},
    ],
}


def effective_thresholds(monitor: str, configured: Iterable[Any]) -> list[dict[str, Any]]:
    """The monitor's defaults with the configured thresholds laid over them."""
    merged = {(t["metric_id"], t["type"]): dict(t) for t in DEFAULT_THRESHOLDS.get(monitor, [])}
    for threshold in configured:
        item = threshold if isinstance(threshold, Mapping) else threshold.model_dump()
        merged[(item["metric_id"], item["type"])] = {"metric_id": item["metric_id"], "type": item["type"], "value": float(item["value"])}
    return list(merged.values())


def find_violations(metrics: Mapping[str, float], thresholds: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Metrics beyond their limits: below a ``lower_limit`` or above an ``upper_limit``."""
    found = []
    for threshold in thresholds:
        value = metrics.get(threshold["metric_id"])
        if value is None:
            continue
        limit = float(threshold["value"])
        if (threshold["type"] == "lower_limit" and value < limit) or (threshold["type"] == "upper_limit" and value > limit):
            found.append({"metric_id": threshold["metric_id"], "type": threshold["type"], "limit": limit, "value": float(value)})
    return found
