"""The monitoring lifecycle on real MNIST through a live endpoint, with the Python API and the CLI:
deploy → monitor → log 2,000 payload and 500 feedback records → evaluate (accuracy equal to
scikit-learn on the same records, thresholds, drift on Fashion-MNIST) → evaluations → cleanup;
with the monitoring store (and so the endpoint's drainer) on SQLite and on PostgreSQL.

One use case is deployed per module (its train stage points at the session's trained model);
the endpoint is stopped by pid at the end whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sk

from conftest import SMALL, deployed_and_monitored, isolated_module_env, mark_trained, stop_deployed, write_use_case
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.monitoring.errors import ThresholdViolationError, UnknownScoringIdError
from modelcycle.platforms.local.payload import endpoint_payload_settings
from modelcycle.core.monitoring.store import MonitoringStore

SEED_SCHEMA = ["scoring_id", "scoring_timestamp", "deployment_id", "asset_revision", "scoring_input", "prediction",
               "probability", "prediction_probability"]


@pytest.fixture(scope="module")
def use_case_dir(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path,
                 module_database_url: str) -> Iterator[Path]:
    """A use case trained (state → the session's model), deployed and monitored, its monitoring
    store in ``module_database_url``."""
    with isolated_module_env(tmp_path_factory, data_dir):
        directory = write_use_case(tmp_path_factory.mktemp("monitoring") / "uc", name="monitored",
                                   tracking={"enabled": False}, monitoring={"database_url": module_database_url}, **SMALL)
        with deployed_and_monitored(directory, trained_model_dir):
            yield directory


def _store(database_url: str) -> MonitoringStore:
    return MonitoringStore(database_url)


def _accuracy_threshold(value: float) -> dict:
    return {"monitoring.quality.thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": value}]}


def test_monitoring_lifecycle_on_real_mnist(use_case_dir: Path, module_database_url: str) -> None:
    from modelcycle.core.datasets import load_dataset

    use_case = UseCase(use_case_dir)
    assert use_case.status()["monitored"] is True
    subscription = use_case.state().stage("monitor").outputs
    assert [field["name"] for field in subscription["payload_schema"]] == SEED_SCHEMA
    assert subscription["payload_logging"] is True and subscription["baseline"]["records"] == 2000
    deployment = subscription["deployment_id"]
    assert use_case.monitor() == subscription  # idempotent while the subscription holds

    payload = use_case.log_payload(samples=2000)
    assert payload["records"] == payload["stored"] == 2000
    feedback = use_case.log_feedback(samples=500)
    assert feedback == {"deployment_id": deployment, "feedback_records": 500, "matched_payload": 500, "scored": 0,
                        "total_feedback": 500}

    # the same 500 records, independently: payload predictions and the MNIST labels of their inputs
    store = _store(module_database_url)
    test = load_dataset("mnist").test
    by_input = {image.tobytes(): int(label) for image, label in zip(test.images[:2000], test.labels[:2000])}
    data = store.quality_data(deployment, with_ids=True)
    records = {r["scoring_id"]: r for r in store.payload_records(deployment)}
    truth = np.array([by_input[bytes(records[sid]["scoring_input"])] for sid in data["scoring_ids"]])
    predicted = np.array([records[sid]["prediction"] for sid in data["scoring_ids"]])
    assert np.array_equal(truth, data["labels"])
    accuracy = sk.accuracy_score(truth, predicted)

    results = {m["monitor"]: m for m in UseCase(use_case_dir, overrides=_accuracy_threshold(accuracy + 0.01)).evaluate()}
    quality, drift = results["quality"], results["drift"]
    assert quality["status"] == "finished" and quality["records"]["feedback"] == 500
    assert quality["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert quality["metrics"]["weighted_f_measure"] == pytest.approx(
        sk.f1_score(truth, predicted, average="weighted", labels=list(range(10)), zero_division=0), abs=1e-9)
    assert [v["metric_id"] for v in quality["violations"]] == ["accuracy"] and quality["issue_count"] == 1
    assert drift["status"] == "finished" and drift["violations"] == [], drift["metrics"]  # clean MNIST traffic
    assert drift["records"]["payload"] == 2000
    plots = use_case_dir / ".modelcycle" / "plots"
    assert {p.name for p in plots.glob("*.png")} == {"confusion_matrix.png", "drift.png", "metric_history.png"}

    below = UseCase(use_case_dir, overrides=_accuracy_threshold(accuracy - 0.01))
    assert all(m["violations"] == [] for m in below.evaluate(plots=False))
    with pytest.raises(ThresholdViolationError, match="quality.accuracy"):
        UseCase(use_case_dir, overrides=_accuracy_threshold(accuracy + 0.01)).evaluate(fail_on_violation=True, plots=False)
    refused = UseCase(use_case_dir, overrides={"monitoring.quality.min_feedback_data_size": 501}).evaluate(plots=False)
    assert refused[0]["status"] == "insufficient_data" and "at least 501 feedback records" in refused[0]["message"]

    fashion = use_case.log_payload(samples=1000, dataset="fashion-mnist")
    assert fashion["stored"] == 1000
    shifted = UseCase(use_case_dir, overrides={**_accuracy_threshold(0.0), "monitoring.drift.max_samples": 1000})
    drift = {m["monitor"]: m for m in shifted.evaluate(plots=False)}["drift"]
    assert {v["metric_id"] for v in drift["violations"]} == {
        "prediction_drift", "confidence_drift", "mean_intensity_drift", "ink_fraction_drift"}, drift["metrics"]

    history = use_case.evaluations()
    assert len(history) == 10 and [m["monitor"] for m in history[:2]] == ["quality", "drift"]
    assert history[-1]["metrics"] == drift["metrics"]

    with pytest.raises(UnknownScoringIdError):
        use_case.attach_feedback({"not-a-scoring-id": 1})
    assert use_case.attach_feedback({fashion["scoring_ids"][0]: 3}) == 1
    assert store.feedback_count(deployment) == 501


def _cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCYCLE_") or k == "MODELCYCLE_DATA_DIR"}
    return subprocess.run([sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_monitoring_commands(use_case_dir: Path, module_database_url: str) -> None:
    monitor = _cli(use_case_dir, "monitor")
    assert monitor.returncode == 0, monitor.stderr
    assert "Successfully finished adding subscription" in monitor.stdout
    for name in SEED_SCHEMA:
        assert name in monitor.stdout
    assert "accuracy lower_limit" in monitor.stdout
    assert re.search(r"│ probability\s+│ array<double>\s+│ yes\s+│", monitor.stdout), monitor.stdout  # not a raw dict
    assert "{" not in monitor.stdout and "containsNull" not in monitor.stdout

    payload = _cli(use_case_dir, "log-payload", "--samples", "200", "--offset", "3000")
    assert payload.returncode == 0, payload.stderr
    assert "Successfully finished storing records" in payload.stdout and "200 of 200 payload records" in payload.stdout
    feedback = _cli(use_case_dir, "log-feedback", "--samples", "100")
    assert feedback.returncode == 0 and "100 feedback records" in feedback.stdout, feedback.stdout + feedback.stderr

    quality_only = ["--set", "monitoring.drift.enabled=false", "--set"]
    failing = _cli(use_case_dir, *quality_only, "monitoring.quality.thresholds=[{metric_id: accuracy, type: lower_limit, value: 0.999}]",
                   "evaluate", "--fail-on-violation", "--no-plots")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "VIOLATION" in failing.stdout and "threshold violated" in failing.stdout
    passing = _cli(use_case_dir, *quality_only, "monitoring.quality.thresholds=[{metric_id: accuracy, type: lower_limit, value: 0.01}]",
                   "evaluate", "--fail-on-violation", "--no-plots", "--json")
    assert passing.returncode == 0, passing.stderr
    [quality] = json.loads(passing.stdout)
    assert quality["monitor"] == "quality" and quality["violations"] == [] and quality["records"]["feedback"] == 601
    scheduled = _cli(use_case_dir, "--set", "monitoring.drift.enabled=false", "evaluate", "--every", "1s", "--times", "2", "--no-plots")
    assert scheduled.returncode == 0, scheduled.stderr
    assert len(re.findall(r"evaluation [0-9a-f]{32}", scheduled.stdout)) == 2

    history = _cli(use_case_dir, "evaluations", "--json")
    assert history.returncode == 0
    assert len(json.loads(history.stdout)) >= 4
    table = _cli(use_case_dir, "evaluations", "--limit", "3")
    assert table.returncode == 0 and "accuracy" in table.stdout

    bad = _cli(use_case_dir, "--set", "monitoring.quality.thresholds=[{metric_id: accuracy, type: lower_limit, lower_limit: 0.8}]", "evaluate")
    assert bad.returncode == 2 and "the limit goes under the key 'value'" in bad.stderr

    deployment = UseCase(use_case_dir).state().stage("monitor").outputs["deployment_id"]
    cleanup = _cli(use_case_dir, "cleanup", "--records")
    assert cleanup.returncode == 0, cleanup.stderr
    removed = eval(cleanup.stdout.strip(), {})  # the printed dict, as the seed prints it
    assert removed["serving"] == 1 and removed["monitoring"] == 1
    assert removed["payload_records"] == 2000 + 1000 + 200 and removed["feedback_records"] == 601
    assert _store(module_database_url).payload_count(deployment) == 0
    after = UseCase(use_case_dir).status()
    assert after["monitored"] is False and after["deployed"] is False
    assert _cli(use_case_dir, "cleanup").stdout.strip() == "{'serving': 0}"


def test_payload_logging_can_be_switched_off(tmp_path: Path) -> None:
    directory = write_use_case(tmp_path / "uc", name="quiet", monitoring={"payload": {"enabled": False}})
    assert endpoint_payload_settings(directory / ".modelcycle", "quiet-1") is None
    on = endpoint_payload_settings(write_use_case(tmp_path / "on", name="on", monitoring={"payload": {"sampling_percentage": 5}}) / ".modelcycle", "on-1")
    assert on is not None and on["sampling_percentage"] == 5
    assert on["journal"].endswith("endpoints/on-1.journal") and on["database_url"].endswith("monitoring.db")


def test_deploy_follows_monitoring_overrides(tmp_path: Path, trained_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--set monitoring.payload.*`` on deploy reaches the endpoint (not only modelcycle.yaml)."""
    monkeypatch.setenv("MODELCYCLE_DATA_DIR", str(data_dir))
    directory = write_use_case(tmp_path / "uc", name="overridden", tracking={"enabled": False}, **SMALL)
    mark_trained(directory, trained_model_dir)
    try:
        record = UseCase(directory, overrides={"monitoring.payload.enabled": False}).deploy()
        assert record["status"] == "InService" and not record.get("payload_journal")
    finally:
        stop_deployed(directory)
