"""The model inventory: every finished training run of a use case becomes a model asset.

``train`` knows nothing of governance; instead, :func:`sync_inventory` (run by ``govern``,
``inventory``, ``facts`` and ``factsheet``) imports each run under ``.modelcycle/runs/*/model/``
whose ``modelcycle.json`` manifest exists and whose MLflow run (if tracked) has finished, and that
the inventory does not hold yet. It is idempotent and cheap once runs are known: MLflow is only
read for new runs. An imported asset holds every fact: identity and versions, params, final
metrics and the per-epoch history, tags, the dataset with its file checksums, preprocessing, the
model summary and the artifact paths.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.artifacts import ARCHIVE_NAME, MANIFEST_NAME, read_manifest
from modelcycle.core.errors import ArtifactError
from modelcycle.core.tracking import default_tracking_uri, wait_for_pending_writes

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.governance.store import GovernanceStore
    from modelcycle.core.view import UseCaseView

__all__ = ["sync_inventory", "run_facts", "lineage", "ENTRY_POINT"]

log = logging.getLogger(__name__)

#: The inference entry point every packaged model carries (SageMaker's ``code/`` layout).
ENTRY_POINT = "code/inference.py"
_UNFINISHED = {"RUNNING", "SCHEDULED"}


def _mlflow_runs(use_case: UseCaseView) -> tuple[Any, dict[str, Any]]:
    """The MLflow client and ``{modelcycle run id: MLflow run}`` of the use case's experiment."""
    wait_for_pending_writes(use_case.work_dir)  # runs still being written by a detached writer
    if not use_case.config.tracking.uri and not (use_case.work_dir / "mlflow.db").exists():
        return None, {}  # never tracked: do not create an empty store
    try:
        from mlflow.tracking import MlflowClient

        tracking = use_case.config.tracking
        client = MlflowClient(tracking_uri=tracking.uri or default_tracking_uri(use_case.work_dir))
        experiment = client.get_experiment_by_name(tracking.experiment or use_case.config.name)
        if experiment is None:
            return client, {}
        runs = client.search_runs([experiment.experiment_id], max_results=50_000)
    except Exception as exc:  # noqa: BLE001 - the inventory still works from the manifests
        log.warning("governance: cannot read the MLflow store: %s", exc)
        return None, {}
    return client, {r.data.tags.get("modelcycle.run_id", r.info.run_id): r for r in runs}


def _history(client: Any, run: Any, fallback: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Per-epoch metrics (``step`` = epoch) from MLflow, else the train stage's history."""
    rows: dict[int, dict[str, Any]] = {}
    if client is not None and run is not None:
        for key in run.data.metrics:
            if key == "duration_s":
                continue
            try:
                for metric in client.get_metric_history(run.info.run_id, key):
                    if metric.step > 0:
                        rows.setdefault(int(metric.step), {"epoch": int(metric.step)})[key] = float(metric.value)
            except Exception as exc:  # noqa: BLE001
                log.warning("governance: no history of %s: %s", key, exc)
    if rows:
        return [rows[step] for step in sorted(rows)]
    return [{**row, "epoch": int(row.get("epoch", i + 1))} for i, row in enumerate(fallback or [])]


def _local_path(uri: str | None) -> Path | None:
    """The directory of a local artifact URI (``/path`` or ``file:///path``), else ``None``."""
    if not uri:
        return None
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return Path(uri) if "://" not in uri else None


def _summary(client: Any, run: Any) -> str | None:
    if client is None or run is None:
        return None
    local = _local_path(run.info.artifact_uri)
    if local is not None:
        path = local / "model_summary.txt"
        return path.read_text() if path.is_file() else None
    try:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="modelcycle-summary-") as tmp:
            path = client.download_artifacts(run.info.run_id, "model_summary.txt", tmp)
            return Path(path).read_text()
    except Exception:  # noqa: BLE001 - not logged (tracking off, remote job) or artifacts moved
        return None


def run_facts(use_case: UseCaseView, model_dir: Path, client: Any = None, run: Any = None) -> dict[str, Any]:
    """Every fact of one trained run, from its manifest and (when tracked) its MLflow run."""
    manifest = read_manifest(model_dir)
    state_train = use_case.store.read().stages.get("train")
    latest = state_train.outputs if state_train and state_train.outputs.get("run_id") == manifest.run_id else {}
    tags = dict(run.data.tags) if run is not None else {}
    params = dict(run.data.params) if run is not None else {}
    metrics = {k: float(v) for k, v in (run.data.metrics if run is not None else manifest.metrics).items()}
    info = run.info if run is not None else None
    duration = ((info.end_time - info.start_time) / 1000) if info and info.end_time and info.start_time else latest.get("duration_s")
    archive = Path(model_dir).parent / ARCHIVE_NAME
    tracking = use_case.config.tracking
    return {
        "identity": {
            "use_case": manifest.use_case,
            "run_id": manifest.run_id,
            "mlflow_run_id": info.run_id if info else latest.get("mlflow_run_id"),
            "job_name": tags.get("job_name", f"{manifest.use_case}-{manifest.run_id[:8]}"),
            "framework": manifest.framework,
            "framework_version": manifest.framework_version,
            "modelcycle_version": manifest.modelcycle_version,
            "libraries": dict(manifest.libraries),
            "platform": tags.get("modelcycle.platform", latest.get("platform")),
            "capture": tags.get("modelcycle.capture", use_case.config.capture),
            "git_commit": tags.get("mlflow.source.git.commit"),
            "created_at": manifest.created_at,
            "tracking_uri": (tracking.uri or default_tracking_uri(use_case.work_dir)) if info else None,
            "experiment": (tracking.experiment or use_case.config.name) if info else None,
        },
        "params": params,
        "hyperparameters": dict(manifest.hyperparameters),
        "model": dict(manifest.model),
        "metrics": metrics,
        "history": _history(client, run, latest.get("history")),
        "tags": tags,
        "dataset": {
            "name": manifest.dataset.name,
            "checksums": dict(manifest.dataset.checksums),
            "train_records": manifest.dataset.train_records,
            "test_records": manifest.dataset.test_records,
        },
        "preprocessing": manifest.preprocessing.model_dump(),
        "input_schema": manifest.input_schema.model_dump(),
        "classes": list(manifest.classes),
        "model_summary": _summary(client, run),
        "artifacts": {
            "model_dir": str(model_dir),
            "manifest": str(Path(model_dir) / MANIFEST_NAME),
            "archive": str(archive) if archive.exists() else None,
            "model_files": list(manifest.model_files),
            "entry_point": ENTRY_POINT,
            "requirements": "code/requirements.txt",
            "mlflow_artifact_uri": info.artifact_uri if info else None,
        },
        "run": {
            "status": info.status if info else "FINISHED",
            "start_time": info.start_time if info else None,
            "end_time": info.end_time if info else None,
            "duration_s": duration,
        },
    }


def sync_inventory(use_case: UseCaseView, store: GovernanceStore, use_case_id: str, who: str) -> list[dict[str, Any]]:
    """Import every finished run not yet in the inventory (stage ``develop``); returns the new assets."""
    runs_dir = use_case.work_dir / "runs"
    if not runs_dir.is_dir():
        return []
    known = store.known_run_ids(use_case_id)
    pending = [
        path.parent for path in sorted(runs_dir.glob(f"*/model/{MANIFEST_NAME}"))
        if path.parent.parent.name not in known
    ]
    if not pending:
        return []
    client, tracked = _mlflow_runs(use_case)
    added = []
    for model_dir in pending:
        run_id = model_dir.parent.name
        run = tracked.get(run_id)
        if run is not None and run.info.status in _UNFINISHED:
            continue  # the tracker is still flushing: import on the next sync
        if run is not None and run.info.status != "FINISHED":
            continue  # failed or killed: not a model asset
        try:
            facts = run_facts(use_case, model_dir, client, run)
        except ArtifactError as exc:
            log.warning("governance: skipping %s: %s", model_dir, exc)
            continue
        identity = facts["identity"]
        record = {
            "run_id": run_id,
            "mlflow_run_id": identity["mlflow_run_id"],
            "name": identity["job_name"],
            "framework": identity["framework"],
            "framework_version": identity["framework_version"],
            "created_at": identity["created_at"],
            "model_dir": str(model_dir),
            "archive": facts["artifacts"]["archive"],
            "dataset_name": facts["dataset"]["name"],
            "dataset_checksums": facts["dataset"]["checksums"],
            "facts": facts,
        }
        asset = store.add_asset(use_case_id, record, who, reason=f"trained run {run_id} imported into the inventory")
        if asset is not None:
            added.append(asset)
    return added


def lineage(asset: dict[str, Any], deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """dataset (file checksums) → run → model asset → endpoint(s), as nodes and edges."""
    facts = asset["facts"]
    dataset = facts["dataset"]
    identity = facts["identity"]
    nodes = [
        {"id": f"dataset:{dataset['name']}", "kind": "dataset", "name": dataset["name"], "checksums": dataset["checksums"],
         "records": {"train": dataset["train_records"], "test": dataset["test_records"]}},
        {"id": f"run:{asset['run_id']}", "kind": "run", "run_id": asset["run_id"], "mlflow_run_id": identity["mlflow_run_id"],
         "job_name": identity["job_name"]},
        {"id": f"model:{asset['id']}", "kind": "model", "asset_id": asset["id"], "name": asset["name"],
         "archive": asset["archive"], "framework": asset["framework"]},
    ]
    edges = [
        {"from": nodes[0]["id"], "to": nodes[1]["id"], "relation": "trained"},
        {"from": nodes[1]["id"], "to": nodes[2]["id"], "relation": "produced"},
    ]
    for deployment in deployments:
        node = {"id": f"endpoint:{deployment['name']}:{deployment['id'][:8]}", "kind": "endpoint", "name": deployment["name"],
                "url": deployment["url"], "platform": deployment["platform"], "removed_at": deployment["removed_at"]}
        nodes.append(node)
        edges.append({"from": nodes[2]["id"], "to": node["id"], "relation": "deployed"})
    return {"nodes": nodes, "edges": edges}
