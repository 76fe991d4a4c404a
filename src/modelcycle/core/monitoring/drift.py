"""The drift monitor: a window of payload against the baseline, four named statistics.

Which records form the window (by default those scored since the previous drift evaluation, so
new drift is not diluted by traffic already judged) is chosen by
:func:`modelcycle.core.monitoring.evaluation.select_window`; this module only measures it.

============================  =================================================  ===========
metric_id                     statistic                                          default
============================  =================================================  ===========
``prediction_drift``          Jensen-Shannon distance (base 2, 0..1) between     upper 0.15
                              the predicted-class distributions
``confidence_drift``          total variation distance (0..1) between the        upper 0.1
                              histograms of the top-class probability, 10 bins
``mean_intensity_drift``      two-sample Kolmogorov-Smirnov statistic of the     upper 0.25
                              per-image mean pixel intensity (/255)
``ink_fraction_drift``        KS statistic of the per-image share of pixels      upper 0.25
                              above half intensity (> 127)
============================  =================================================  ===========

Tabular records (the model's input schema names fields) have no image statistics; their input
drift is judged per feature instead (:func:`feature_drift`):

============================  =================================================  ===========
``feature_drift``             the largest per-feature distance: a numerical      upper 0.25
                              feature's KS statistic, a categorical one's
                              Jensen-Shannon distance of category frequencies
============================  =================================================  ===========

and the measurement names the features beyond the limit (``details["features"]``, and the
violation's ``features``). The baseline keeps a per-feature sample of the test split: the sorted
values of a numerical feature, the category counts of a categorical one.

The baseline is recorded by ``monitor``: a fixed-seed random sample of held-out *test* images
scored by the deployed model in-process (unseen in training, so the model's confidence on it is
what live traffic gets; on its own training images it looks more confident than it ever is in
service). The per-image input statistics are computed once at ingest and stored with each
payload record, so a window of 100,000 records is a few arrays: the whole evaluation runs in
tens of milliseconds. KS p-values (asymptotic) are reported as details; violations are judged on
the distances, which do not shrink towards "significant" as windows grow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelcycle.core.monitoring.errors import InsufficientDataError

__all__ = [
    "DRIFT_METRICS",
    "CONFIDENCE_BINS",
    "input_statistics",
    "make_baseline",
    "feature_baseline",
    "feature_drift",
    "drifted_features",
    "drift_metrics",
    "jensen_shannon_distance",
    "total_variation",
    "ks_statistic",
    "ks_pvalue",
]

DRIFT_METRICS = ("prediction_drift", "confidence_drift", "mean_intensity_drift", "ink_fraction_drift", "feature_drift")
CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)
_PLOT_BINS = np.linspace(0.0, 1.0, 41)


def input_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean intensity (0..1) and ink fraction (share of pixels > 127) of raw 0-255 images."""
    flat = np.asarray(images).reshape(len(images), -1)
    if flat.dtype != np.uint8:
        flat = np.rint(flat).astype(np.uint8)
    width = flat.shape[1]
    return flat.sum(axis=1, dtype=np.int64) / (255.0 * width), np.count_nonzero(flat > 127, axis=1) / width


def _distribution(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """sqrt of the JS divergence with base-2 logs (0 = identical, 1 = disjoint); scipy's
    ``jensenshannon(p, q, base=2)``."""
    p, q = _distribution(np.asarray(p, np.float64)), _distribution(np.asarray(q, np.float64))
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms (0..1)."""
    return float(0.5 * np.abs(_distribution(np.asarray(p, np.float64)) - _distribution(np.asarray(q, np.float64))).sum())


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (scipy's ``ks_2samp(a, b).statistic``)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    values = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, values, side="right") / len(a)
    cdf_b = np.searchsorted(b, values, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic (Kolmogorov distribution with
    the Stephens small-sample correction)."""
    effective = n * m / (n + m)
    root = math.sqrt(effective)
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 1e-3:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
    return float(min(1.0, max(0.0, total)))


def feature_baseline(records: np.ndarray, fields: Sequence[Any]) -> list[dict[str, Any]]:
    """Per-feature reference of raw ``(N, F)`` tabular ``records`` (categories as their index):
    ``{name, kind, values}`` (sorted) for a numerical field, ``{name, kind, categories, counts}``
    for a categorical one. ``fields`` are the schema's :class:`~modelcycle.core.artifacts.FieldSchema`."""
    records = np.asarray(records, np.float64)
    features: list[dict[str, Any]] = []
    for j, field in enumerate(fields):
        column = records[:, j]
        if field.kind == "categorical":
            k = len(field.categories)
            counts = np.bincount(np.clip(column.astype(np.int64), 0, k - 1), minlength=k)
            features.append({"name": field.name, "kind": "categorical", "categories": list(field.categories),
                             "counts": counts.tolist()})
        else:
            features.append({"name": field.name, "kind": "numerical", "values": np.sort(column).tolist()})
    return features


def make_baseline(probabilities: np.ndarray, images: np.ndarray, labels: np.ndarray | None = None,
                  source: dict[str, Any] | None = None, fields: Sequence[Any] | None = None) -> dict[str, Any]:
    """The JSON baseline a subscription keeps: predictions, confidences and input statistics —
    for tabular records (``fields`` given: the schema's fields, ``images`` raw ``(N, F)``
    records) the per-feature reference of :func:`feature_baseline` instead."""
    probabilities = np.asarray(probabilities, np.float64)
    predictions = probabilities.argmax(axis=1)
    baseline: dict[str, Any] = {
        "records": int(len(predictions)),
        "classes": int(probabilities.shape[1]),
        "class_counts": np.bincount(predictions, minlength=probabilities.shape[1]).tolist(),
        "confidence": np.round(np.sort(probabilities.max(axis=1)), 7).tolist(),
        "source": source or {},
    }
    if fields:
        baseline["features"] = feature_baseline(images, fields)
    else:
        mean, ink = input_statistics(images)
        baseline["mean_intensity"] = np.round(np.sort(mean), 7).tolist()
        baseline["ink_fraction"] = np.round(np.sort(ink), 7).tolist()
    if labels is not None:
        baseline["accuracy"] = float((predictions == np.asarray(labels)).mean())
    return baseline


def _histogram(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    return np.histogram(np.clip(values, bins[0], bins[-1]), bins=bins)[0]


def drift_metrics(baseline: dict[str, Any], window: dict[str, np.ndarray], min_samples: int = 1) -> dict[str, Any]:
    """Drift of ``window`` (arrays ``prediction``, ``confidence``, ``mean_intensity``,
    ``ink_fraction``; for a tabular baseline ``records`` ``(n, F)`` instead of the two image
    statistics) against ``baseline``.

    Returns:
        ``{"metrics": {...}, "details": {histograms, p-values}, "records": {...}}``.

    Raises:
        InsufficientDataError: the window holds fewer than ``min_samples`` records.
    """
    n = len(window["prediction"])
    if n < min_samples:
        raise InsufficientDataError(
            "drift", n, min_samples,
            f"drift needs at least {min_samples} payload records (min_samples) and has {n}: score more "
            "traffic, or 'modelcycle log-payload --samples N'",
        )
    classes = int(baseline["classes"])
    base_classes = np.asarray(baseline["class_counts"], np.float64)
    current_classes = np.bincount(np.clip(window["prediction"], 0, classes - 1), minlength=classes).astype(np.float64)
    base_conf = np.asarray(baseline["confidence"], np.float64)
    base_conf_hist = _histogram(base_conf, CONFIDENCE_BINS)
    current_conf_hist = _histogram(window["confidence"], CONFIDENCE_BINS)
    metrics = {
        "prediction_drift": jensen_shannon_distance(base_classes, current_classes),
        "confidence_drift": total_variation(base_conf_hist, current_conf_hist),
    }
    details: dict[str, Any] = {
        "class_distribution": {"baseline": _distribution(base_classes).tolist(), "current": _distribution(current_classes).tolist()},
        "confidence_histogram": {"bins": CONFIDENCE_BINS.tolist(), "baseline": base_conf_hist.tolist(), "current": current_conf_hist.tolist()},
        "p_values": {},
    }
    if "features" in baseline:
        features = feature_drift(baseline["features"], window["records"])
        metrics["feature_drift"] = max((f["statistic"] for f in features), default=0.0)
        details["features"] = features
        details["feature_histogram"] = _feature_histogram(baseline["features"], window["records"], features)
        return {"metrics": metrics, "details": details, "records": {"payload": n, "baseline": int(baseline["records"])}}
    for name in ("mean_intensity", "ink_fraction"):
        base_values = np.asarray(baseline[name], np.float64)
        statistic = ks_statistic(base_values, window[name])
        metrics[f"{name}_drift"] = statistic
        details["p_values"][f"{name}_drift"] = ks_pvalue(statistic, len(base_values), n)
        details[f"{name}_histogram"] = {
            "bins": _PLOT_BINS.tolist(),
            "baseline": _histogram(base_values, _PLOT_BINS).tolist(),
            "current": _histogram(np.asarray(window[name], np.float64), _PLOT_BINS).tolist(),
        }
    return {"metrics": metrics, "details": details, "records": {"payload": n, "baseline": int(baseline["records"])}}


def feature_drift(features: Sequence[dict[str, Any]], records: np.ndarray) -> list[dict[str, Any]]:
    """Per-feature drift of raw ``(n, F)`` tabular ``records`` against the baseline's ``features``
    (:func:`feature_baseline`): ``{name, kind, algorithm, statistic, p_value}`` per feature, in
    the schema's order. Numerical: two-sample KS (``p_value`` asymptotic); categorical:
    Jensen-Shannon distance (base 2) of the category frequencies (``p_value`` None).

    Raises:
        ValueError: ``records`` do not have one column per baseline feature.
    """
    records = np.asarray(records, np.float64)
    if records.ndim != 2 or records.shape[1] != len(features):
        raise ValueError(f"records of shape {records.shape} for {len(features)} baseline features")
    result = []
    for j, feature in enumerate(features):
        column = records[:, j]
        if feature["kind"] == "categorical":
            k = len(feature["counts"])
            current = np.bincount(np.clip(column.astype(np.int64), 0, k - 1), minlength=k)
            statistic, p_value, algorithm = jensen_shannon_distance(feature["counts"], current), None, "jensen_shannon"
        else:
            base = np.asarray(feature["values"], np.float64)
            algorithm = "kolmogorov_smirnov"
            if len(column) and len(base):
                statistic = ks_statistic(base, column)
                p_value: float | None = ks_pvalue(statistic, len(base), len(column))
            else:
                statistic, p_value = 0.0, 1.0
        result.append({"name": feature["name"], "kind": feature["kind"], "algorithm": algorithm,
                       "statistic": float(statistic), "p_value": p_value})
    return result


def drifted_features(features: Sequence[dict[str, Any]], limit: float) -> list[str]:
    """Names of the features whose drift statistic exceeds ``limit``, most drifted first."""
    beyond = [f for f in features if f["statistic"] > limit]
    return [f["name"] for f in sorted(beyond, key=lambda f: -f["statistic"])]


def _feature_histogram(baseline: Sequence[dict[str, Any]], records: np.ndarray,
                       features: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Baseline and current histograms of the most drifted feature (for the drift plot)."""
    if not features:
        return None
    j = int(np.argmax([f["statistic"] for f in features]))
    reference, column = baseline[j], np.asarray(records, np.float64)[:, j]
    if reference["kind"] == "categorical":
        k = len(reference["counts"])
        bins = np.arange(k + 1, dtype=np.float64) - 0.5
        base_counts = np.asarray(reference["counts"])
    else:
        values = np.asarray(reference["values"], np.float64)
        low = min(values.min(initial=0.0), column.min(initial=0.0))
        high = max(values.max(initial=1.0), column.max(initial=1.0))
        bins = np.linspace(low, high if high > low else low + 1.0, 31)
        base_counts = _histogram(values, bins)
    return {"feature": reference["name"], "kind": reference["kind"], "statistic": features[j]["statistic"],
            "bins": bins.tolist(), "baseline": np.asarray(base_counts).tolist(), "current": _histogram(column, bins).tolist()}
