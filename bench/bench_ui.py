"""Server-side render time of the ``modelcycle ui`` overview and runs pages over a use case with
1,000 MLflow runs and 200 stored evaluations. Goal: each page ≤ 300 ms.

The fixture is written synthetically and fast (MLflow's client for the runs, the monitoring store
for the evaluations): it is a benchmark fixture, not the product. Pages are requested in process
through FastAPI's test client (the full app: routing, data, templates; no network), interleaved
overview / runs per round, after one warm-up request each (the first request of a process imports
MLflow and fills the runs cache; reported as ``cold_ms``).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

NAME = "bench-ui"
CONFIG = f"""name: {NAME}
framework: pytorch
data:
  dataset: mnist
hyperparameters:
  epochs: 3
"""


def _write_runs(work_dir: Path, runs: int, epochs: int = 3) -> None:
    from mlflow.entities import Metric, Param, RunTag

    from modelcycle.core.tracking import default_tracking_uri, mlflow_client

    client = mlflow_client(default_tracking_uri(work_dir))
    experiment = client.create_experiment(NAME)
    rng = random.Random(1)
    now = int(time.time() * 1000)
    for index in range(runs):
        run = client.create_run(experiment, start_time=now - (runs - index) * 60_000,
                                tags={"modelcycle.run_id": f"{index:08x}{'0' * 24}"})
        run_id = run.info.run_id
        params = [Param("learning_rate", str(rng.choice((0.001, 0.003, 0.01)))),
                  Param("hidden_channels", str(rng.choice((5, 10, 20, 32)))), Param("epochs", str(epochs)),
                  Param("optimizer", "adam"), Param("batch_size", "64")]
        metrics = []
        for epoch in range(1, epochs + 1):
            accuracy = min(0.99, 0.8 + 0.05 * epoch + rng.random() * 0.03)
            metrics += [Metric("train_loss", 1.0 / epoch, now, epoch), Metric("test_loss", 1.1 / epoch, now, epoch),
                        Metric("test_accuracy", accuracy, now, epoch)]
        metrics.append(Metric("duration_s", 20 + rng.random(), now, 0))
        client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag("modelcycle.platform", "local")])
        client.set_terminated(run_id, "FINISHED", end_time=now - (runs - index) * 60_000 + 30_000)


def _write_evaluations(work_dir: Path, evaluations: int) -> None:
    from modelcycle.core.monitoring.store import MonitoringStore, resolve_database_url

    store = MonitoringStore(resolve_database_url(None, work_dir))
    subscription = store.create_subscription(NAME, f"{NAME}-endpoint", None, None, [], {}, None)
    rng = random.Random(2)
    start = time.time() - evaluations * 3600
    for index in range(evaluations):
        accuracy = 0.75 + rng.random() * 0.2
        common = {"subscription_id": subscription["id"], "run_id": f"{index:032x}", "timestamp": start + index * 3600,
                  "status": "finished"}
        store.add_measurement({
            **common, "monitor": "quality", "metrics": {"accuracy": accuracy, "f1_macro": accuracy - 0.01},
            "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.8}],
            "violations": ([{"metric_id": "accuracy", "type": "lower_limit", "limit": 0.8, "value": accuracy}] if accuracy < 0.8 else []),
            "records": {"feedback": 500}, "details": {"confusion_matrix": [[rng.randint(0, 50) for _ in range(10)]
                                                                          for _ in range(10)], "classes": 10},
        })


def build(directory: Path, runs: int = 1000, evaluations: int = 200) -> Path:
    """The benchmark use case under ``directory`` (its config, MLflow runs, evaluations)."""
    use_case = directory / NAME
    use_case.mkdir(parents=True, exist_ok=True)
    (use_case / "modelcycle.yaml").write_text(CONFIG)
    _write_runs(use_case / ".modelcycle", runs)
    _write_evaluations(use_case / ".modelcycle", evaluations)
    return use_case


def _ms(client: Any, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (path, response.status_code)
    return elapsed


def run(rounds: int = 5, runs: int = 1000, evaluations: int = 200) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from modelcycle.ui.app import create_app

    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        started = time.perf_counter()
        build(Path(tmp), runs, evaluations)
        fixture_s = time.perf_counter() - started
        client = TestClient(create_app([tmp]))
        runs_page = f"/use-cases/{NAME}/runs"
        cold = {"overview_ms": _ms(client, "/"), "runs_ms": _ms(client, runs_page)}
        rows = client.get(runs_page).text.count('<tr class="run"')
        assert rows == runs, f"the runs page shows {rows} runs, not {runs}"
        overview, runs_ms = [], []
        for _ in range(rounds):  # interleaved: overview, runs, overview, runs, ...
            overview.append(_ms(client, "/"))
            runs_ms.append(_ms(client, runs_page))
    return {
        "rounds": rounds, "runs": runs, "evaluations": evaluations, "fixture_s": round(fixture_s, 1),
        "cold_ms": {k: round(v, 1) for k, v in cold.items()},
        "overview_ms": [round(v, 1) for v in overview], "runs_ms": [round(v, 1) for v in runs_ms],
        "median_ms": {"overview": round(statistics.median(overview), 1), "runs": round(statistics.median(runs_ms), 1)},
        "goal_ms": 300,
        "met": max(statistics.median(overview), statistics.median(runs_ms)) <= 300,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
