"""PNG plots of evaluations (matplotlib's Agg canvas, imported only when plots are written).

``confusion_matrix.png`` (latest quality), ``drift.png`` (baseline vs current: predicted classes,
confidence, mean intensity, ink fraction) and ``metric_history.png`` (every metric by evaluation
number, one panel per unit, with its limits labelled; see :func:`history_figure`).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["history_figure", "write_plots"]


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


#: The panels of ``metric_history.png``, one per unit: (title, y limits or None, the metrics).
HISTORY_PANELS = ("quality (share, 0–1)", "loss", "drift (distance, 0–1)")


def _panel(monitor: str, metric: str) -> str:
    """The panel of ``metric``: drift distances, losses, or the quality shares (accuracy, rates)."""
    if monitor == "drift":
        return HISTORY_PANELS[2]
    return HISTORY_PANELS[1] if "loss" in metric else HISTORY_PANELS[0]


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def history_figure(history: list[dict[str, Any]]) -> Any:
    """The figure of ``metric_history.png``, or ``None`` without a finished measurement.

    x is the evaluation number (1 = the oldest evaluation in ``history``; the x label gives the
    first and last evaluation's UTC time), so two evaluations seconds apart sit side by side
    instead of on a calendar axis. One panel per unit — quality shares (accuracy, precision,
    rates: y 0–1), losses, drift distances (y 0–1) — with each metric's limit drawn as a dashed
    line of its colour and labelled (``accuracy ≥ 0.8``). With a few evaluations, each point
    carries its value.
    """
    finished = sorted((m for m in history if m["status"] == "finished"), key=lambda m: m["timestamp"])
    if not finished:
        return None
    evaluations: dict[str, int] = {}
    for m in finished:
        evaluations.setdefault(m.get("run_id") or str(m["timestamp"]), len(evaluations) + 1)
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    limits: dict[str, dict[str, dict[str, Any]]] = {}
    for m in finished:
        number = evaluations[m.get("run_id") or str(m["timestamp"])]
        for metric, value in m["metrics"].items():
            if value is None or not np.isfinite(value):
                continue
            series.setdefault(_panel(m["monitor"], metric), {}).setdefault(metric, []).append((number, float(value)))
        for threshold in m.get("thresholds") or []:  # the latest limits win
            limits.setdefault(_panel(m["monitor"], threshold["metric_id"]), {})[threshold["metric_id"]] = threshold
    panels = [name for name in HISTORY_PANELS if name in series]
    count = len(evaluations)
    figure = _figure(10, 3.0 * len(panels) + 0.6)
    axes = np.atleast_1d(figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0])
    for ax, panel in zip(axes, panels):
        for metric, points in sorted(series[panel].items()):
            xs, ys = zip(*points)
            line = ax.plot(xs, ys, marker="o", label=metric)[0]
            threshold = limits.get(panel, {}).get(metric)
            if count <= 6 and (threshold or len(series[panel]) == 1):  # values of the few points that matter
                for x, y in points:
                    ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7,
                                color=line.get_color())
            if threshold:
                sign = "≥" if threshold["type"] == "lower_limit" else "≤"
                ax.axhline(threshold["value"], color=line.get_color(), linestyle="--", linewidth=0.9)
                ax.annotate(f"limit: {metric} {sign} {threshold['value']:g}", (1.0, threshold["value"]),
                            xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(-4, 3),
                            ha="right", fontsize=7, color=line.get_color())
        for metric, threshold in limits.get(panel, {}).items():  # a limit on a metric never measured
            if metric not in series[panel]:
                ax.axhline(threshold["value"], color="grey", linestyle="--", linewidth=0.9)
        if panel == HISTORY_PANELS[1]:
            ax.set_ylim(bottom=0.0)
        else:
            ax.set_ylim(0.0, 1.05)
        ax.set_title(panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    from matplotlib.ticker import MaxNLocator

    last = axes[-1]
    last.set_xlim(0.5, count + 0.5)
    last.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(count, 12)))
    first_time, last_time = _utc(finished[0]["timestamp"]), _utc(finished[-1]["timestamp"])
    span = f"1 = {first_time} UTC" + (f", {count} = {last_time} UTC" if count > 1 else "")
    last.set_xlabel(f"evaluation ({span})")
    figure.suptitle(f"metric history: {count} evaluation{'s' if count != 1 else ''} (dashed: limits)")
    return figure


def _history(history: list[dict[str, Any]], path: Path) -> str | None:
    figure = history_figure(history)
    return _save(figure, path) if figure is not None else None


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
