"""Plotly figures (plain ``{"data", "layout"}`` dicts, drawn by the served plotly.js) of the pages.

No plotly Python import is needed: the figures are JSON documents the browser draws. Every line
chart uses ``mode: "lines+markers"``, so each point is drawn (an SVG ``path.point``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_curves", "monitor_chart", "confusion_figure", "lineage_figure"]

_LAYOUT = {"margin": {"l": 50, "r": 20, "t": 30, "b": 40}, "height": 320, "legend": {"orientation": "h"}}


def run_curves(runs: list[tuple[str, dict[str, list[list[float]]]]]) -> dict[str, Any]:
    """Per-epoch curves: one trace per (run, metric series); ``runs`` is ``[(label, {metric:
    [[epoch, value], ...]})]``. With one run the trace names are the metric names."""
    data = []
    for label, series in runs:
        for metric, points in series.items():
            data.append({"type": "scatter", "mode": "lines+markers", "name": metric if len(runs) == 1 else f"{label} {metric}",
                         "x": [p[0] for p in points], "y": [p[1] for p in points]})
    return {"data": data, "layout": {**_LAYOUT, "xaxis": {"title": {"text": "epoch"}, "dtick": 1}}}


def monitor_chart(evaluations: list[dict[str, Any]], monitor: str, title: str) -> dict[str, Any]:
    """``monitor``'s metrics over time (one trace each), its thresholds as dashed lines, and the
    measurements that violated one as red markers."""
    rows = [m for m in evaluations if m.get("monitor") == monitor and m.get("status") == "finished"]
    metrics: dict[str, tuple[list[Any], list[Any]]] = {}
    for row in rows:
        for key, value in (row.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                xs, ys = metrics.setdefault(key, ([], []))
                xs.append(row["time"])
                ys.append(value)
    data: list[dict[str, Any]] = [{"type": "scatter", "mode": "lines+markers", "name": key, "x": xs, "y": ys}
                                  for key, (xs, ys) in metrics.items()]
    bad_x, bad_y, bad_text = [], [], []
    for row in rows:
        for violation in row.get("violations") or []:
            key = violation.get("metric_id")
            if key in (row.get("metrics") or {}):
                bad_x.append(row["time"])
                bad_y.append(row["metrics"][key])
                bad_text.append(f"{key} violates {violation.get('type')} {violation.get('limit')}")
    if bad_x:
        data.append({"type": "scatter", "mode": "markers", "name": "violation", "x": bad_x, "y": bad_y,
                     "text": bad_text, "marker": {"color": "red", "size": 12, "symbol": "x"}})
    shapes = []
    seen: set[tuple[str, Any]] = set()
    for row in rows[-1:]:
        for threshold in row.get("thresholds") or []:
            key = (threshold.get("metric_id"), threshold.get("value"))
            if threshold.get("metric_id") in metrics and key not in seen:
                seen.add(key)
                shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": threshold["value"],
                               "y1": threshold["value"], "line": {"dash": "dash", "color": "#c33"}})
                data.append({"type": "scatter", "mode": "lines", "name": f"{key[0]} {threshold.get('type')}",
                             "x": [rows[0]["time"], rows[-1]["time"]], "y": [key[1], key[1]],
                             "line": {"dash": "dash", "color": "#c33", "width": 1}, "hoverinfo": "name+y"})
    return {"data": data, "layout": {**_LAYOUT, "title": {"text": title}, "shapes": shapes}}


def confusion_figure(evaluations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest finished quality measurement's confusion matrix as a heatmap (``None``: none)."""
    for row in reversed(evaluations):
        details = row.get("details") or {}
        if row.get("monitor") == "quality" and details.get("confusion_matrix"):
            count = details.get("classes")  # the number of classes K (labels 0 … K-1)
            classes = [str(c) for c in (count if isinstance(count, list) else range(len(details["confusion_matrix"])))]
            return {"data": [{"type": "heatmap", "z": details["confusion_matrix"], "x": classes, "y": classes,
                              "colorscale": "Blues"}],
                    "layout": {**_LAYOUT, "title": {"text": f"confusion matrix ({row.get('time')})"},
                               "xaxis": {"title": {"text": "predicted"}}, "yaxis": {"title": {"text": "true"}, "autorange": "reversed"}}}
    return None


def lineage_figure(lineage: dict[str, Any]) -> dict[str, Any]:
    """The lineage ``{"nodes", "edges"}`` as a plotly figure: one column per kind (data set → run
    → model → endpoints), edges as lines, nodes as labelled markers."""
    columns = {"dataset": 0, "run": 1, "model": 2, "endpoint": 3}
    placed: dict[str, tuple[float, float]] = {}
    per_column: dict[int, int] = {}
    for node in lineage.get("nodes", []):
        column = columns.get(node["kind"], 4)
        row = per_column.get(column, 0)
        per_column[column] = row + 1
        placed[node["id"]] = (float(column), -float(row))
    edge_x: list[Any] = []
    edge_y: list[Any] = []
    for edge in lineage.get("edges", []):
        (x0, y0), (x1, y1) = placed[edge["from"]], placed[edge["to"]]
        edge_x += [x0, x1, None]
        edge_y += [y0, y1, None]
    labels = [f"{n['kind']}: {n.get('name') or n.get('run_id') or n.get('asset_id')}" for n in lineage.get("nodes", [])]
    return {
        "data": [
            {"type": "scatter", "mode": "lines", "x": edge_x, "y": edge_y, "hoverinfo": "none",
             "line": {"color": "#888"}, "showlegend": False},
            {"type": "scatter", "mode": "markers+text", "x": [placed[n["id"]][0] for n in lineage.get("nodes", [])],
             "y": [placed[n["id"]][1] for n in lineage.get("nodes", [])], "text": labels, "textposition": "top center",
             "marker": {"size": 18}, "showlegend": False},
        ],
        "layout": {"height": 260, "xaxis": {"visible": False, "range": [-0.5, 3.5]}, "yaxis": {"visible": False},
                   "margin": {"l": 10, "r": 10, "t": 30, "b": 10}},
    }
