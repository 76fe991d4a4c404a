"""The runs table's rows as HTML, built once per state of the MLflow store.

With 1,000 runs the table is most of the runs page; rendering it cell by cell through a template
costs hundreds of milliseconds, so its rows are written here with plain string escaping and
cached with the runs (:meth:`~modelcycle.ui.data.Catalog.runs_table`). The markup is the DOM
contract of the runs page: ``<tr class="run" data-run-id>`` rows whose ``<td data-key>`` cells
hold the sortable ``data-value``, an ``a.run-link`` per row, and ``data-search`` (the parameters
and metrics as text) for the filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any

__all__ = ["RunsTable", "runs_table", "varying_params", "number_text"]


@dataclass(frozen=True)
class RunsTable:
    """The columns (varying parameters, every metric) and the ``<tbody>`` rows' HTML."""

    param_keys: list[str]
    metric_keys: list[str]
    rows_html: str
    count: int


def number_text(value: Any) -> str:
    """A cell's text: floats to 4 decimals, ``None`` as empty."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def varying_params(runs: list[dict[str, Any]]) -> list[str]:
    """The parameters whose value differs between runs (all of them for a single run)."""
    values: dict[str, set[str]] = {}
    for run in runs:
        for key, value in run["params"].items():
            values.setdefault(key, set()).add(str(value))
    return sorted(k for k, v in values.items() if len(v) > 1 or len(runs) == 1)


def _started(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return datetime.fromtimestamp(value / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def runs_table(use_case: str, runs: list[dict[str, Any]]) -> RunsTable:
    """The rows of ``runs`` (``runs --json`` rows) for use case ``use_case``'s runs page."""
    params, metrics = varying_params(runs), sorted({k for r in runs for k in r["metrics"]})
    base = f"/use-cases/{escape(use_case)}/runs/"
    rows = []
    for run in runs:
        run_id = escape(str(run["run_id"]))
        search = " ".join([f"{k}={v}" for k, v in run["params"].items()] + [f"{k}={v}" for k, v in run["metrics"].items()])
        cells = [
            f'<td><input type="checkbox" class="run-select" name="compare" value="{run_id}"></td>',
            f'<td data-key="run_id" data-value="{run_id}"><a class="run-link" href="{base}{run_id}">{run_id[:8]}</a></td>',
            f'<td data-key="status" data-value="{escape(str(run["status"]))}">{escape(str(run["status"]))}</td>',
            f'<td data-key="start_time" data-value="{run.get("started") or ""}">{_started(run.get("started"))}</td>',
        ]
        for key in params:
            value = escape(str(run["params"].get(key, "")))
            cells.append(f'<td data-key="params.{escape(key)}" data-value="{value}">{value}</td>')
        for key in metrics:
            value = run["metrics"].get(key)
            cells.append(f'<td data-key="metrics.{escape(key)}" data-value="{"" if value is None else value}">'
                         f'{number_text(value)}</td>')
        rows.append(f'<tr class="run" data-run-id="{run_id}" data-search="{escape(search)}">{"".join(cells)}</tr>')
    return RunsTable(params, metrics, "\n".join(rows), len(rows))
