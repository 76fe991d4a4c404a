"""Read-only snapshots of use cases for the dashboard.

Everything here reads through the existing :class:`~modelcycle.core.lifecycle.UseCase` methods and
services (``status``, ``runs``, ``inventory``, ``evaluations``, the governance and monitoring
stores) and never takes the use case's lock: ``StateStore.read`` reads the atomically replaced
``state.json`` without it, and the SQL stores handle their own concurrency, so a training run or
an endpoint is never blocked by a viewer. A use case that cannot be opened (a corrupt or
half-written ``modelcycle.yaml``, a damaged ``state.json``) becomes an :class:`ErrorCard`.

What is expensive is cached on the file that changes with it: the MLflow runs on the MLflow
store's modification time, the evaluations on the monitoring store's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ModelcycleError
from modelcycle.ui.discovery import CONFIG_NAME, find_use_cases

__all__ = ["Catalog", "ErrorCard", "Entry", "jsonable", "latest_evaluation", "scrape_metrics"]


def jsonable(data: Any) -> Any:
    """``data`` as the CLI's ``--json`` prints it (``json.dumps(..., default=str)``), parsed back."""
    return json.loads(json.dumps(data, default=str))


@dataclass(frozen=True)
class ErrorCard:
    """A use case directory the dashboard cannot show: where it is and what is wrong."""

    path: str
    message: str


@dataclass
class Entry:
    """One opened use case: the ``UseCase`` (config loaded; nothing locked) and its caches."""

    directory: Path
    use_case: Any
    stamp: tuple[int, int]
    cache: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.use_case.config.name)

    def cached(self, key: str, stamp: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``stamp`` (a file's modification time): later calls with the
        same stamp get the stored value."""
        held = self.cache.get(key)
        if held is not None and held[0] == stamp and stamp is not None:
            return held[1]
        value = compute()
        self.cache[key] = (stamp, value)
        return value


def _stamp(*paths: Path) -> tuple[int, ...] | None:
    """The modification times and sizes of ``paths`` (a missing file counts as 0), or ``None``
    when none exists (nothing to cache on)."""
    values: list[int] = []
    seen = False
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            values += [0, 0]
            continue
        seen = True
        values += [info.st_mtime_ns, info.st_size]
    return tuple(values) if seen else None


def _sqlite_file(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def _sqlite_stamp(url: str) -> tuple[int, ...] | None:
    """A SQLite store's stamp (the database and its WAL, which a commit changes); ``None`` for
    other databases, which are then read every time."""
    path = _sqlite_file(url)
    return None if path is None else _stamp(path, path.with_name(path.name + "-wal"))


class Catalog:
    """The use cases under ``roots``, opened on demand and kept while their config is unchanged.

    Args:
        roots: directories searched by :func:`~modelcycle.ui.discovery.find_use_cases`.
    """

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self._entries: dict[Path, Entry] = {}
        self._lock = threading.Lock()  # guards the dict only, never a use case

    # -- discovery and opening ------------------------------------------------------------
    def scan(self) -> tuple[list[Entry], list[ErrorCard]]:
        """Every use case under the roots: the ones that open, and an error card for each that does
        not (two directories with one use case name: the second is an error card)."""
        entries, errors, names = [], [], {}
        for directory in find_use_cases(self.roots):
            opened = self.open(directory)
            if isinstance(opened, ErrorCard):
                errors.append(opened)
            elif opened.name in names:
                errors.append(ErrorCard(str(directory), f"use case name '{opened.name}' is also used by "
                                        f"{names[opened.name]}: give one of them another 'name:' in {CONFIG_NAME}"))
            else:
                names[opened.name] = str(directory)
                entries.append(opened)
        return entries, errors

    def open(self, directory: Path) -> Entry | ErrorCard:
        """The use case in ``directory`` (reopened when its ``modelcycle.yaml`` changed), or an
        error card naming the file and the problem."""
        config = directory / CONFIG_NAME
        try:
            info = config.stat()
        except OSError as exc:
            return ErrorCard(str(directory), f"{config} cannot be read: {exc.strerror or exc}")
        stamp = (info.st_mtime_ns, info.st_size)
        with self._lock:
            held = self._entries.get(directory)
        if held is not None and held.stamp == stamp:
            return held
        try:
            from modelcycle.core.lifecycle import UseCase

            use_case = UseCase(directory, lock_timeout=10.0)
        except ModelcycleError as exc:
            return ErrorCard(str(directory), str(exc))
        except Exception as exc:  # a half-written file may fail anywhere while loading
            return ErrorCard(str(directory), f"{type(exc).__name__}: {exc}")
        entry = Entry(directory, use_case, stamp)
        with self._lock:
            self._entries[directory] = entry
        return entry

    def get(self, name: str) -> Entry | None:
        """The opened use case called ``name``, or ``None``."""
        entries, _ = self.scan()
        return next((e for e in entries if e.name == name), None)

    def warm(self) -> None:
        """Fill the caches (MLflow runs and the runs tables, evaluations) of every use case, so the
        first page view does not pay for importing MLflow and reading every run. Errors are left
        for the pages to show."""
        entries, _ = self.scan()
        for entry in entries:
            try:
                self.runs_table(entry)
                self.evaluations(entry)
            except Exception:  # noqa: BLE001 - the page that needs it reports it
                continue

    # -- the same data as the CLI's --json ----------------------------------------------------
    @staticmethod
    def status(entry: Entry) -> dict[str, Any]:
        """``modelcycle status --json`` (raises :class:`ModelcycleError` for a damaged state)."""
        return jsonable(entry.use_case.status())

    @staticmethod
    def _runs_store(entry: Entry) -> tuple[bool, Any]:
        """``(exists, stamp)`` of the use case's MLflow store (a missing SQLite file: nothing
        tracked yet, and the store is not created by looking)."""
        from modelcycle.core.tracking import default_tracking_uri

        tracking = entry.use_case.config.tracking
        uri = tracking.uri or default_tracking_uri(entry.use_case.work_dir)
        path = _sqlite_file(uri)
        return (path is None or path.exists()), _sqlite_stamp(uri)

    def runs(self, entry: Entry) -> list[dict[str, Any]]:
        """``modelcycle runs --json``, cached on the MLflow store's modification time."""
        exists, stamp = self._runs_store(entry)
        if not exists:
            return []
        return entry.cached("runs", stamp, lambda: jsonable(entry.use_case.runs()))

    def runs_table(self, entry: Entry) -> Any:
        """The runs page's table (:class:`~modelcycle.ui.tables.RunsTable`), cached with the runs."""
        from modelcycle.ui.tables import runs_table

        exists, stamp = self._runs_store(entry)  # one stamp for both: the table is of these runs
        runs = entry.cached("runs", stamp, lambda: jsonable(entry.use_case.runs())) if exists else []
        return entry.cached("runs_table", stamp, lambda: runs_table(entry.name, runs))

    @staticmethod
    def inventory(entry: Entry) -> list[dict[str, Any]]:
        """``modelcycle inventory --json`` (imports finished runs into the governance store, as
        the CLI does; that store is not the use case's lock)."""
        return jsonable(entry.use_case.inventory())

    @staticmethod
    def evaluations(entry: Entry) -> list[dict[str, Any]]:
        """``modelcycle evaluations --json``, cached on the monitoring store's modification time."""
        url = _monitoring_url(entry)
        if _sqlite_file(url) is not None and not _sqlite_file(url).exists():  # type: ignore[union-attr]
            return []
        return entry.cached("evaluations", _sqlite_stamp(url), lambda: jsonable(entry.use_case.evaluations()))

    # -- page data ----------------------------------------------------------------------------
    def overview_row(self, entry: Entry) -> dict[str, Any]:
        """One overview row: framework, governance stage, badges, endpoint, latest evaluation."""
        status = self.status(entry)
        endpoint = status.get("endpoint") or {}
        return {
            "name": entry.name,
            "directory": str(entry.directory),
            "framework": status["framework"],
            "stage": self.governance_stage(entry, status),
            "badges": {flag: bool(status.get(flag)) for flag in ("trained", "deployed", "governed", "monitored")},
            "endpoint": {"name": endpoint.get("name"), "status": endpoint.get("status") or "none",
                         "url": endpoint.get("url")},
            "evaluation": latest_evaluation(self.evaluations(entry)),
        }

    @staticmethod
    def governance_stage(entry: Entry, status: dict[str, Any]) -> str | None:
        """The lifecycle stage (develop → operate) of the served run's model asset, else of the
        latest run's; ``None`` when the inventory holds neither (nothing is imported here)."""
        from modelcycle.core.governance.service import Governance

        governance = Governance(entry.use_case)
        if not governance.exists():
            return "develop" if status.get("trained") else None
        record = governance.store.get_use_case(entry.name)
        by_run = {a["run_id"]: a for a in governance.store.assets(record["id"])} if record else {}
        for run_id in ((status.get("served") or {}).get("run_id"), status.get("run_id")):
            if run_id in by_run:
                return str(by_run[run_id]["stage"])
        return "develop" if status.get("trained") else None

    def run_detail(self, entry: Entry, run_id: str) -> dict[str, Any] | None:
        """One run: the ``runs --json`` row plus tags, dataset inputs, artifacts and the per-epoch
        metric series (``{metric: [[epoch, value], ...]}``); ``None`` for an unknown run."""
        row = next((r for r in self.runs(entry) if run_id in (r["run_id"], r["mlflow_run_id"])), None)
        if row is None:
            return None

        def compute() -> dict[str, Any]:
            from modelcycle.core.tracking import default_tracking_uri, mlflow_client

            tracking = entry.use_case.config.tracking
            client = mlflow_client(tracking.uri or default_tracking_uri(entry.use_case.work_dir))
            run = client.get_run(row["mlflow_run_id"])
            series = {}
            for key in sorted(run.data.metrics):
                points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key) if m.step >= 1)
                if points:
                    series[key] = [[step, value] for step, value in points]
            datasets = [{"name": d.dataset.name, "digest": d.dataset.digest, "source": d.dataset.source,
                         "context": next((t.value for t in d.tags if t.key == "mlflow.data.context"), "")}
                        for d in (run.inputs.dataset_inputs if run.inputs else [])]
            try:
                artifacts = _artifacts(client, run.info.run_id)
            except Exception as exc:  # an artifact store that cannot be listed still shows the run
                artifacts = [{"path": f"(cannot list artifacts: {exc})", "size": None}]
            return {**row, "tags": dict(run.data.tags), "datasets": datasets, "artifacts": artifacts,
                    "series": series, "checksums": _checksums(Path(row["model_dir"]))}

        return entry.cached(f"run:{row['mlflow_run_id']}", (row["status"], json.dumps(row["metrics"], sort_keys=True)),
                            compute)

    @staticmethod
    def model(entry: Entry) -> dict[str, Any]:
        """The model page: the served (else latest) asset described (facts, stage, lineage), its
        audit trail and custom facts; ``{"asset": None, "message"}`` when there is none yet."""
        from modelcycle.core.governance.service import Governance

        governance = Governance(entry.use_case)
        try:
            asset = governance.asset()
        except ModelcycleError as exc:
            return {"asset": None, "message": str(exc), "audit": []}
        described = jsonable(governance.describe(asset))
        audit = jsonable(governance.store.audit_trail(asset_id=asset["id"]))
        return {"asset": described, "message": None, "audit": audit}

    @staticmethod
    def endpoint(entry: Entry) -> dict[str, Any]:
        """The endpoint page/API: the record with its live status, metrics scraped from its
        ``/metrics`` (requests, p50/p99 latency, error rate), payload and feedback counts and
        the most recent payload records."""
        use_case = entry.use_case
        record = use_case.endpoint()
        result: dict[str, Any] = {"endpoint": jsonable(record), "metrics": None, "metrics_error": None,
                                  "payload_count": 0, "feedback_count": 0, "recent": []}
        if record is None:
            return result
        if record.get("status") in ("InService", "Degraded") and record.get("url"):
            try:
                result["metrics"] = scrape_metrics(record["url"], use_case.config.endpoint_token())
            except (OSError, ValueError) as exc:
                result["metrics_error"] = f"{record['url']}/metrics: {exc}"
        url = _monitoring_url(entry)
        if _sqlite_file(url) is None or _sqlite_file(url).exists():  # type: ignore[union-attr]
            from modelcycle.core.monitoring.service import store_for

            store = store_for(use_case)
            state = use_case.store.read()
            deployment = state.stage("monitor").outputs.get("deployment_id") or record.get("name")
            count = store.payload_count(deployment)
            result["payload_count"] = count
            result["feedback_count"] = store.feedback_count(deployment)
            recent = store.payload_records(deployment, limit=20, with_input=False, offset=max(0, count - 20))
            result["recent"] = jsonable([{k: v for k, v in r.items() if k != "probability"} for r in recent[::-1]])
        return result


def _monitoring_url(entry: Entry) -> str:
    from modelcycle.core.monitoring.store import resolve_database_url

    return resolve_database_url(entry.use_case.config.monitoring.database_url, entry.use_case.work_dir)


def _artifacts(client: Any, run_id: str, path: str | None = None, depth: int = 0) -> list[dict[str, Any]]:
    """The run's artifact files (directories walked three levels deep)."""
    found = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir and depth < 3:
            found += _artifacts(client, run_id, item.path, depth + 1)
        else:
            found.append({"path": item.path + ("/" if item.is_dir else ""), "size": item.file_size})
    return found


def _checksums(model_dir: Path) -> dict[str, Any]:
    """The data set checksums the run's model manifest records (empty without a manifest)."""
    from modelcycle.core.artifacts import read_manifest

    try:
        manifest = read_manifest(model_dir)
    except (ModelcycleError, OSError, ValueError):
        return {}
    return dict(manifest.dataset.checksums)


def latest_evaluation(evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest evaluation (the measurements sharing the newest ``run_id``) as
    ``{"status": "pass" | "violation" | "none", "time", "violations": [...]}``."""
    if not evaluations:
        return {"status": "none", "time": None, "violations": []}
    newest = evaluations[-1].get("run_id")
    latest = [m for m in evaluations if m.get("run_id") == newest] or evaluations[-1:]
    violations = [v for m in latest for v in (m.get("violations") or [])]
    return {"status": "violation" if violations else "pass", "time": latest[-1].get("time"), "violations": violations}


def scrape_metrics(url: str, token: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
    """The endpoint's ``/metrics`` (Prometheus text) summarised: ``requests`` (all codes),
    ``errors`` (non-2xx), ``error_rate``, ``records`` and ``p50_ms``/``p99_ms`` interpolated in
    the latency histogram's buckets (``None`` before the first request)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(url.rstrip("/") + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the endpoint's own URL
        text = response.read().decode()
    requests = errors = records = 0.0
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelcycle_requests_total":
                requests += sample.value
                if not str(sample.labels.get("code", "")).startswith("2"):
                    errors += sample.value
            elif sample.name == "modelcycle_records_total":
                records += sample.value
            elif sample.name == "modelcycle_request_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "modelcycle_request_seconds_count":
                count += sample.value
    buckets.sort()
    return {
        "requests": int(requests), "errors": int(errors), "records": int(records),
        "error_rate": errors / requests if requests else 0.0,
        "p50_ms": _quantile(buckets, count, 0.5), "p99_ms": _quantile(buckets, count, 0.99),
    }


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding the
    ``q``-th observation, in milliseconds; ``None`` without observations."""
    if not count or not buckets:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower * 1000
            inside = cumulative - below
            fraction = (rank - below) / inside if inside else 1.0
            return (lower + (upper - lower) * fraction) * 1000
        lower, below = upper, cumulative
    return lower * 1000
