"""Run the enabled monitors of a subscription and store one measurement per monitor.

A measurement (OpenScale's shape, flattened): ``monitor``, ``run_id`` (shared by the monitors of
one evaluation), ``timestamp``, ``status`` (``finished``, or ``insufficient_data`` with the
refusal in ``message``), ``metrics``, ``thresholds`` (those applied), ``violations``
(``{metric_id, type, limit, value}``), ``issue_count``, ``records`` (counts used) and
``details`` (confusion matrix, histograms, p-values).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from modelcycle.core.monitoring.drift import drift_metrics
from modelcycle.core.monitoring.errors import InsufficientDataError, MonitoringError
from modelcycle.core.monitoring.quality import check_size, quality_metrics
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.core.monitoring.thresholds import effective_thresholds, find_violations

__all__ = ["evaluate_quality", "evaluate_drift", "run_evaluation", "present"]


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


def evaluate_drift(store: MonitoringStore, deployment_id: str, baseline: dict[str, Any] | None, config: Any) -> dict[str, Any]:
    """Drift of the deployment's most recent payload (``config`` is ``monitoring.drift``)."""
    thresholds = effective_thresholds("drift", config.thresholds)
    if not baseline:
        raise MonitoringError("the subscription has no drift baseline: run 'modelcycle monitor --force'")
    window = store.drift_window(deployment_id, config.max_samples)
    try:
        result = drift_metrics(baseline, window, config.min_samples)
    except InsufficientDataError as exc:
        return {"monitor": "drift", "status": "insufficient_data", "message": str(exc), "thresholds": thresholds,
                "records": {"payload": exc.have, "required": config.min_samples, "baseline": baseline["records"]}}
    return {
        "monitor": "drift", "status": "finished", "metrics": result["metrics"], "thresholds": thresholds,
        "violations": find_violations(result["metrics"], thresholds),
        "records": {**result["records"], "required": config.min_samples}, "details": result["details"],
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
        monitors.append(lambda: evaluate_drift(store, deployment_id, subscription.get("baseline"), monitoring.drift))
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
