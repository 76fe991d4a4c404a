"""Compare and choose: the runs of a use case, hyperparameter sweeps, the best run.

Runs are read from the use case's MLflow store (the ExperimentAnalytics table of the seeds);
each run's model lives under ``.modelcycle/runs/<run id>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.config import Hyperparameters
from modelcycle.core.errors import ConfigError, StageError
from modelcycle.core.tracking import default_tracking_uri, mlflow_client, wait_for_pending_writes

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.view import UseCaseView as UseCase

__all__ = ["list_runs", "find_run", "sweep_overrides"]

_METRICS = ("test_accuracy", "test_loss", "train_loss", "duration_s")


def _client(use_case: UseCase) -> tuple[Any, str | None]:
    tracking = use_case.config.tracking
    wait_for_pending_writes(use_case.work_dir)  # runs of any process may still be being written
    client = mlflow_client(tracking.uri or default_tracking_uri(use_case.work_dir))
    experiment = client.get_experiment_by_name(tracking.experiment or use_case.config.name)
    return client, experiment.experiment_id if experiment else None


def list_runs(use_case: UseCase, sort: str | None = None, ascending: bool | None = None) -> list[dict[str, Any]]:
    """Every tracked training run of the use case, newest first or sorted by a metric.

    Metrics named ``*loss*`` sort ascending by default, everything else descending.
    """
    client, experiment_id = _client(use_case)
    if experiment_id is None:
        return []
    runs = []
    for run in client.search_runs([experiment_id], max_results=10_000):
        run_id = run.data.tags.get("modelcycle.run_id", run.info.run_id)
        info = run.info
        duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
        runs.append(
            {
                "run_id": run_id,
                "mlflow_run_id": info.run_id,
                "status": info.status,
                "started": info.start_time,
                "params": dict(run.data.params),
                "metrics": dict(run.data.metrics),
                "duration_s": duration,
                "model_dir": str(use_case.work_dir / "runs" / run_id / "model"),
            }
        )
    if sort:
        if ascending is None:
            ascending = "loss" in sort
        missing = float("inf") if ascending else float("-inf")
        runs.sort(key=lambda r: r["metrics"].get(sort, missing), reverse=not ascending)
    return runs


def find_run(use_case: UseCase, run_id: str | None = None, best: str | None = None) -> dict[str, Any]:
    """The run named by (a prefix of) ``run_id``, or the best finished run by metric ``best``.

    Raises:
        StageError: no such run, no finished run with that metric, or its model is gone.
    """
    runs = [r for r in list_runs(use_case, sort=best) if r["status"] == "FINISHED"]
    if run_id:
        matches = [r for r in runs if r["run_id"].startswith(run_id) or r["mlflow_run_id"].startswith(run_id)]
        if len(matches) != 1:
            known = ", ".join(r["run_id"][:8] for r in runs) or "none"
            raise StageError("deploy", f"run '{run_id}' matches {len(matches)} finished runs; runs: {known}")
        chosen = matches[0]
    else:
        ranked = [r for r in runs if best in r["metrics"]]
        if not ranked:
            raise StageError("deploy", f"no finished run has metric '{best}'; see 'modelcycle runs'")
        chosen = ranked[0]
    if not (Path(chosen["model_dir"]) / "modelcycle.json").exists():
        raise StageError("deploy", f"the model of run {chosen['run_id']} is gone from {chosen['model_dir']}")
    return chosen


def sweep_overrides(param: str, values: list[str]) -> list[dict[str, Any]]:
    """``hidden_channels`` + ``["2", "5"]`` → ``[{"model.hidden_channels": 2}, ...]``.

    A bare name is a hyperparameter when ``Hyperparameters`` has it, else a ``model:`` option;
    ``options.width`` is ``model.options.width`` (an argument of the ``model.class`` network).
    """
    from modelcycle.core.config import parse_overrides

    if not param or not values:
        raise ConfigError("--param expects NAME=V1,V2,... (e.g. hidden_channels=2,5,10,20,32)")
    if param.startswith("options."):  # a user network's constructor argument
        param = f"model.{param}"
    key = param if "." in param else (
        f"hyperparameters.{param}" if param in Hyperparameters.model_fields else f"model.{param}"
    )
    return [parse_overrides([f"{key}={value}"]) for value in values]
