"""PNG plots of evaluations (matplotlib's Agg canvas, imported only when plots are written).

``confusion_matrix.png`` (latest quality), ``drift.png`` (baseline vs current: predicted classes,
confidence, mean intensity, ink fraction) and ``metric_history.png`` (every metric over the
stored measurements, with its limits).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_plots"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> str:
    """Save atomically through a temp file of this call's own (concurrent evaluations do not
    collide; the last rename wins)."""
    figure.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.png")
    try:
        figure.savefig(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)


def _confusion(measurement: dict[str, Any], path: Path) -> str:
    matrix = np.asarray(measurement["details"]["confusion_matrix"])
    figure = _figure(6, 5.4)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    k = matrix.shape[0]
    axes.set_xticks(range(k))
    axes.set_yticks(range(k))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true label")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if matrix[i, j] > threshold else "black")
    accuracy = measurement["metrics"].get("accuracy")
    axes.set_title(f"confusion matrix ({measurement['records'].get('feedback')} feedback records, accuracy {accuracy:.4f})")
    return _save(figure, path)


def _drift(measurement: dict[str, Any], path: Path) -> str:
    details, metrics = measurement["details"], measurement["metrics"]
    figure = _figure(11, 7.5)
    axes = figure.subplots(2, 2)
    classes = details["class_distribution"]
    k = np.arange(len(classes["baseline"]))
    ax = axes[0, 0]
    ax.bar(k - 0.2, classes["baseline"], 0.4, label="baseline")
    ax.bar(k + 0.2, classes["current"], 0.4, label="current")
    ax.set_xticks(k)
    ax.set_title(f"predicted class — Jensen-Shannon {metrics['prediction_drift']:.3f}")
    ax.legend()
    panels: tuple[tuple[Any, str, str], ...] = (
        (axes[0, 1], "confidence_histogram", f"top-class probability — total variation {metrics['confidence_drift']:.3f}"),
    )
    if "features" in details:  # tabular: per-feature distances, and the most drifted feature
        _feature_bars(axes[1, 0], details["features"])
        top = details.get("feature_histogram")
        if top:
            panels += ((axes[1, 1], "feature_histogram", f"{top['feature']} — {top['statistic']:.3f}"),)
    else:
        panels += (
            (axes[1, 0], "mean_intensity_histogram", f"mean intensity — KS {metrics['mean_intensity_drift']:.3f}"),
            (axes[1, 1], "ink_fraction_histogram", f"ink fraction — KS {metrics['ink_fraction_drift']:.3f}"),
        )
    for ax, key, title in panels:
        histogram = details[key]
        bins = np.asarray(histogram["bins"])
        for label in ("baseline", "current"):
            counts = np.asarray(histogram[label], np.float64)
            share = counts / counts.sum() if counts.sum() else counts
            ax.stairs(share, bins, label=label, fill=label == "baseline", alpha=0.5 if label == "baseline" else 1.0)
        ax.set_title(title)
        ax.legend()
    figure.suptitle(f"drift: {measurement['records'].get('payload')} recent records vs {measurement['records'].get('baseline')} baseline")
    return _save(figure, path)


def _feature_bars(ax: Any, features: list[dict[str, Any]]) -> None:
    """Per-feature drift statistics, the most drifted first (at most 20)."""
    shown = sorted(features, key=lambda f: -f["statistic"])[:20]
    ax.barh(range(len(shown)), [f["statistic"] for f in shown])
    ax.set_yticks(range(len(shown)), [f["name"] for f in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_title("feature drift (KS; categorical: Jensen-Shannon)")


def _history(history: list[dict[str, Any]], path: Path) -> str | None:
    finished = [m for m in history if m["status"] == "finished"]
    monitors = sorted({m["monitor"] for m in finished})
    if not monitors:
        return None
    figure = _figure(11, 3.6 * len(monitors))
    axes = np.atleast_1d(figure.subplots(len(monitors), 1))
    for ax, monitor in zip(axes, monitors):
        rows = [m for m in finished if m["monitor"] == monitor]
        times = [datetime.fromtimestamp(m["timestamp"], timezone.utc) for m in rows]
        for metric in rows[-1]["metrics"]:
            values = [m["metrics"].get(metric, np.nan) for m in rows]
            line = ax.plot(times, values, marker="o", label=metric)[0]
            for threshold in rows[-1]["thresholds"]:
                if threshold["metric_id"] == metric:
                    ax.axhline(threshold["value"], color=line.get_color(), linestyle="--", linewidth=0.8)
        ax.set_title(f"{monitor} history (dashed: limits)")
        ax.legend(fontsize=7, loc="best")
    figure.autofmt_xdate()
    return _save(figure, path)


def write_plots(measurements: list[dict[str, Any]], history: list[dict[str, Any]], directory: Path) -> list[str]:
    """Write the plots of the latest ``measurements`` and of ``history`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for measurement in measurements:
        if measurement["status"] != "finished":
            continue
        if measurement["monitor"] == "quality":
            written.append(_confusion(measurement, directory / "confusion_matrix.png"))
        elif measurement["monitor"] == "drift":
            written.append(_drift(measurement, directory / "drift.png"))
    history_plot = _history(history, directory / "metric_history.png")
    if history_plot:
        written.append(history_plot)
    return written
