"""Drift windows on real traffic through a live endpoint, on SQLite and on PostgreSQL: the endpoint's
drainer logs every scored image into the store, and ``evaluate`` judges the records since the
previous evaluation, so 1,000 Fashion-MNIST images after 9,000 clean MNIST ones are flagged (a
last-10,000 window dilutes them), while clean traffic raises nothing.

One use case is deployed per database (its train stage points at the session's trained model);
the endpoint is stopped by pid at the end whatever happened.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SMALL, deployed_and_monitored, isolated_module_env, write_use_case
from modelcycle.core.errors import ConfigError
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.monitoring.store import MonitoringStore

ALL_DRIFT = {"prediction_drift", "confidence_drift", "mean_intensity_drift", "ink_fraction_drift"}
DRIFT_ONLY = {"monitoring.quality.enabled": False}


@pytest.fixture(scope="module")
def use_case_dir(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path,
                 module_database_url: str) -> Iterator[Path]:
    """A use case deployed (payload logged into ``module_database_url``) and monitored."""
    with isolated_module_env(tmp_path_factory, data_dir):
        directory = write_use_case(tmp_path_factory.mktemp("windows") / "uc", name="windows",
                                   tracking={"enabled": False}, monitoring={"database_url": module_database_url}, **SMALL)
        with deployed_and_monitored(directory, trained_model_dir):
            yield directory


def _drift(directory: Path, **overrides: Any) -> dict[str, Any]:
    [drift] = UseCase(directory, overrides={**DRIFT_ONLY, **overrides}).evaluate(plots=False)
    assert drift["monitor"] == "drift"
    return drift


def _violated(drift: dict[str, Any]) -> set[str]:
    return {v["metric_id"] for v in drift["violations"]}


def _scored_times(store: MonitoringStore, deployment: str) -> list[float]:
    return sorted(r["scoring_timestamp"] for r in store.payload_records(deployment, with_input=False))


def test_new_drift_after_clean_traffic_is_flagged(use_case_dir: Path, module_database_url: str) -> None:
    use_case = UseCase(use_case_dir)
    deployment = use_case.state().stage("monitor").outputs["deployment_id"]
    store = MonitoringStore(module_database_url)
    assert store.dialect == module_database_url.split(":")[0].split("+")[0]

    clean = use_case.log_payload(samples=9000)
    assert clean["stored"] == 9000  # the drainer stored every scored image
    first = _drift(use_case_dir)
    assert first["status"] == "finished" and first["violations"] == [], first["metrics"]
    times = _scored_times(store, deployment)
    assert first["details"]["window"] == {"kind": "since_last", "since": None, "count": 9000, "new": 9000,
                                          "first": times[0], "last": times[-1]}

    fashion = use_case.log_payload(samples=1000, dataset="fashion-mnist")
    assert fashion["stored"] == 1000
    drifted = _drift(use_case_dir)
    assert _violated(drifted) == ALL_DRIFT, drifted["metrics"]
    window = drifted["details"]["window"]
    assert window["since"] == times[-1] and window["count"] == window["new"] == 1000
    assert drifted["records"]["payload"] == 1000
    newest = _scored_times(store, deployment)[-1000:]
    assert (window["first"], window["last"]) == (newest[0], newest[-1])

    # the same traffic judged the old way, the last 10,000 records: the drift is diluted away
    diluted = _drift(use_case_dir, **{"monitoring.drift.window": "last_n", "monitoring.drift.last_n": 10_000})
    assert diluted["details"]["window"]["count"] == 10_000 and diluted["violations"] == [], diluted["metrics"]

    # the window is kept with the measurement: history shows it
    stored = [m for m in use_case.evaluations() if m["monitor"] == "drift"]
    assert [m["details"]["window"]["kind"] for m in stored] == ["since_last", "since_last", "last_n"]
    assert stored[1]["details"]["window"] == window


def test_clean_traffic_after_drift_raises_nothing(use_case_dir: Path) -> None:
    use_case = UseCase(use_case_dir)
    before = _drift(use_case_dir, **{"monitoring.drift.window": "last_n", "monitoring.drift.last_n": 1000})
    assert _violated(before) == ALL_DRIFT  # the newest 1,000 are Fashion-MNIST
    assert use_case.log_payload(samples=1000, offset=9000)["stored"] == 1000
    after = _drift(use_case_dir)
    assert after["violations"] == [] and after["details"]["window"]["new"] == 1000, after["metrics"]

    # nothing new since: the window reaches back to the most recent min_samples records
    again = _drift(use_case_dir)
    assert again["details"]["window"]["new"] == 0 and again["details"]["window"]["count"] == 500
    assert again["details"]["window"]["last"] == after["details"]["window"]["last"] and again["violations"] == []


def test_duration_windows_and_refusals(use_case_dir: Path) -> None:
    started = time.time()
    whole = _drift(use_case_dir, **{"monitoring.drift.window": "duration", "monitoring.drift.duration_s": 86_400})
    window = whole["details"]["window"]
    assert window["kind"] == "duration" and started - 86_400 <= window["since"] <= time.time() - 86_400
    assert window["count"] == 10_000  # 11,000 scored within the day; max_samples caps the window
    quiet = _drift(use_case_dir, **{"monitoring.drift.window": "duration", "monitoring.drift.duration_s": 0.001})
    assert quiet["details"]["window"]["new"] == 0 and quiet["details"]["window"]["count"] == 500
    refused = _drift(use_case_dir, **{"monitoring.drift.min_samples": 20_000, "monitoring.drift.max_samples": 20_000})
    assert refused["status"] == "insufficient_data" and "at least 20000 payload records" in refused["message"]
    assert refused["details"]["window"]["count"] == 11_000


@pytest.mark.parametrize(("overrides", "message"), [
    ({"monitoring.drift.window": "weekly"}, "monitoring.drift.window"),
    ({"monitoring.drift.window": "last_n", "monitoring.drift.last_n": 50}, r"last_n \(50\) must lie between min_samples \(500\)"),
    ({"monitoring.drift.window": "last_n", "monitoring.drift.last_n": 20_000}, r"and max_samples \(10000\)"),
    ({"monitoring.drift.min_samples": 600, "monitoring.drift.max_samples": 400}, r"min_samples \(600\) exceeds max_samples \(400\)"),
    ({"monitoring.drift.duration_s": 0}, "monitoring.drift.duration_s"),
])
def test_bad_window_settings_are_refused_naming_the_key(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    directory = write_use_case(tmp_path / "uc", name="bad-window")
    with pytest.raises(ConfigError, match=message):
        UseCase(directory, overrides=overrides).config
