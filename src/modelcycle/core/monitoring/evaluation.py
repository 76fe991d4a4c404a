"""Run the enabled monitors of a subscription and store one measurement per monitor.

A measurement (OpenScale's shape, flattened): ``monitor``, ``run_id`` (shared by the monitors of
one evaluation), ``timestamp``, ``status`` (``finished``, or ``insufficient_data`` with the
refusal in ``message``), ``metrics``, ``thresholds`` (those applied), ``violations``
(``{metric_id, type, limit, value}``), ``issue_count``, ``records`` (counts used) and
``details`` (confusion matrix, histograms, p-values; for drift the ``window`` of payload records it
judged: kind, cut, counts, first and last scoring time).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import numpy as np

from modelcycle.core.monitoring.drift import drift_metrics, drifted_features
from modelcycle.core.monitoring.errors import InsufficientDataError, MonitoringError
from modelcycle.core.monitoring.quality import check_size, quality_metrics
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.core.monitoring.thresholds import effective_thresholds, find_violations

__all__ = ["evaluate_quality", "evaluate_drift", "select_window", "previous_window_end", "run_evaluation", "present"]


def evaluate_quality(store: MonitoringStore, deployment_id: str, config: Any) -> dict[str, Any]:
    """Quality over the deployment's feedback (``config`` is ``monitoring.quality``)."""
    thresholds = effective_thresholds("quality", config.thresholds)
    data = store.quality_data(deployment_id, config.max_records)
    n = len(data["labels"])
    try:
        check_size(n, config.min_feedback_data_size)
    except InsufficientDataError as exc:
        return {"monitor": "quality", "status": "insufficient_data", "message": str(exc), "thresholds": thresholds,
                "records": {"feedback": n, "required": config.min_feedback_data_size}}
    result = quality_metrics(data["labels"], data["predictions"], data["probabilities"])
    return {
        "monitor": "quality", "status": "finished", "metrics": result["metrics"], "thresholds": thresholds,
        "violations": find_violations(result["metrics"], thresholds),
        "records": {"feedback": n, "required": config.min_feedback_data_size},
        "details": {"confusion_matrix": result["confusion_matrix"], "classes": result["classes"]},
    }


def previous_window_end(store: MonitoringStore, subscription_id: str | None) -> float | None:
    """The scoring time of the newest record the subscription's last finished drift evaluation
    judged (its measurement time when it predates recorded windows); ``None`` before the first."""
    previous = store.latest_measurement(subscription_id, "drift") if subscription_id else None
    if previous is None:
        return None
    window = (previous.get("details") or {}).get("window") or {}
    return float(window["last"]) if window.get("last") is not None else float(previous["timestamp"])


def select_window(store: MonitoringStore, deployment_id: str, config: Any, subscription_id: str | None,
                  now: float, record_width: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The payload records a drift evaluation judges (``monitoring.drift.window``, see
    :class:`~modelcycle.core.config.DriftMonitorConfig`) and the window's description: ``kind``,
    ``since`` (the cut: records scored after it are new; ``None`` when there is none), ``new``
    (records after the cut), ``count``, ``first`` and ``last`` (scoring times, epoch seconds).
    ``record_width``: tabular records of that many fields; the window holds their values too."""
    kind = config.window
    if kind == "last_n":
        since, limit, at_least = None, config.last_n, 0
    elif kind == "duration":
        since, limit, at_least = now - config.duration_s, config.max_samples, config.min_samples
    else:  # since_last
        since, limit, at_least = previous_window_end(store, subscription_id), config.max_samples, config.min_samples
    window = store.drift_window(deployment_id, limit, since=since, at_least=at_least, record_width=record_width)
    times = window["scoring_timestamp"]
    described = {
        "kind": kind, "since": since, "count": int(len(times)),
        "new": int(len(times) if since is None else np.count_nonzero(times > since)),
        "first": float(times.min()) if len(times) else None, "last": float(times.max()) if len(times) else None,
    }
    return window, described


def evaluate_drift(store: MonitoringStore, deployment_id: str, baseline: dict[str, Any] | None, config: Any,
                   subscription_id: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Drift of a window of the deployment's payload (``config`` is ``monitoring.drift``; the
    window follows the subscription's previous drift evaluation for ``since_last``). The window
    used is kept under ``details["window"]`` (see :func:`select_window`)."""
    thresholds = effective_thresholds("drift", config.thresholds)
    if not baseline:
        raise MonitoringError("the subscription has no drift baseline: run 'modelcycle monitor --force'")
    width = len(baseline["features"]) if "features" in baseline else None
    window, described = select_window(store, deployment_id, config, subscription_id, time.time() if now is None else now,
                                      width)
    try:
        result = drift_metrics(baseline, window, config.min_samples)
    except InsufficientDataError as exc:
        return {"monitor": "drift", "status": "insufficient_data", "message": str(exc), "thresholds": thresholds,
                "records": {"payload": exc.have, "required": config.min_samples, "baseline": baseline["records"]},
                "details": {"window": described}}
    violations = find_violations(result["metrics"], thresholds)
    for violation in violations:  # tabular: name the features that drifted
        if violation["metric_id"] == "feature_drift" and violation["type"] == "upper_limit":
            violation["features"] = drifted_features(result["details"]["features"], violation["limit"])
    return {
        "monitor": "drift", "status": "finished", "metrics": result["metrics"], "thresholds": thresholds,
        "violations": violations,
        "records": {**result["records"], "required": config.min_samples},
        "details": {**result["details"], "window": described},
    }


def run_evaluation(store: MonitoringStore, subscription: dict[str, Any], monitoring: Any,
                   remote: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Evaluate every enabled monitor, store the measurements, return them (see :func:`present`).
    ``remote`` adds details per monitor (e.g. ``{"quality": {"openscale": {...}}}``: a remote
    backend's own run of the same monitor)."""
    run_id, now = uuid.uuid4().hex, time.time()
    deployment_id = subscription["deployment_id"]
    monitors: list[Callable[[], dict[str, Any]]] = []
    if monitoring.quality.enabled:
        monitors.append(lambda: evaluate_quality(store, deployment_id, monitoring.quality))
    if monitoring.drift.enabled:
        monitors.append(lambda: evaluate_drift(store, deployment_id, subscription.get("baseline"), monitoring.drift,
                                               subscription["id"], now))
    if not monitors:
        raise MonitoringError("no monitor is enabled (monitoring.quality.enabled, monitoring.drift.enabled)")
    # the monitors read their records over separate connections at once: the database works on
    # both queries while the drivers wait (GIL released), which halves the wall time of the reads
    with ThreadPoolExecutor(max_workers=len(monitors), thread_name_prefix="modelcycle-evaluate") as pool:
        results = [future.result() for future in [pool.submit(monitor) for monitor in monitors]]
    stored = []
    for result in results:
        extra = (remote or {}).get(result["monitor"])
        if extra:
            result["details"] = {**(result.get("details") or {}), **extra}
        row = store.add_measurement({**result, "subscription_id": subscription["id"], "run_id": run_id, "timestamp": now})
        stored.append(present(row))
    return stored


def present(row: dict[str, Any]) -> dict[str, Any]:
    """A stored measurement as the API returns it (with an ISO ``time``)."""
    out = dict(row)
    out["time"] = datetime.fromtimestamp(row["timestamp"], timezone.utc).isoformat(timespec="seconds")
    out["measurement_id"] = row["id"]
    return out
