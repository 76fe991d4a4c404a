"""The tabular CSV example (breast cancer, one categorical column) through the whole lifecycle with
real ``modelcycle`` processes, as a user runs it: init → train → deploy → score over HTTP with
named fields → monitor → log-payload → log-feedback → evaluate (quiet on clean traffic, flags the
one feature shifted by two standard deviations) → cleanup."""

from __future__ import annotations

import csv
import json
import os
import random
import statistics
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from conftest import stop_deployed
from modelcycle.datasets.tabular import write_breast_cancer_csv
from modelcycle.platforms.local.endpoints import process_alive

LABEL = "diagnosis"
CATEGORICAL = "size_band"
SHIFTED = "mean texture"  # the numerical feature the drifted traffic moves by two standard deviations
MIN_SAMPLES = 300  # drift window: the shifted traffic below is exactly this many records


def _modelcycle(directory: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", "-C", str(directory), *args],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _init(directory: Path, framework: str) -> list[dict[str, str]]:
    """``init`` the tabular example of ``framework`` in ``directory``, write its CSV and a drift
    window small enough for a few hundred records; returns the CSV's rows."""
    init = subprocess.run(
        [sys.executable, "-m", "modelcycle.cli", "init", str(directory), "--framework", framework, "--example", "tabular"],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )
    _ok(init)
    config_file = directory / "modelcycle.yaml"
    config = yaml.safe_load(config_file.read_text())
    assert config["data"]["dataset"] == "csv" and CATEGORICAL in config["data"]["options"]["categorical_columns"]
    table = write_breast_cancer_csv(directory / config["data"]["path"])
    config.setdefault("monitoring", {})["drift"] = {"min_samples": MIN_SAMPLES}
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    with table.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _post(url: str, document: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(document).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _fields_document(rows: list[dict[str, str]], fields: list[str], shift: float = 0.0) -> dict[str, Any]:
    """OpenScale's tabular form of ``rows`` with ``fields`` in the given order; ``shift`` is
    added to every value of :data:`SHIFTED`."""
    values = [[row[f] if f == CATEGORICAL else float(row[f]) + (shift if f == SHIFTED else 0.0) for f in fields]
              for row in rows]
    return {"input_data": [{"fields": fields, "values": values}]}


def _score_all(url: str, rows: list[dict[str, str]], fields: list[str], shift: float = 0.0) -> list[int]:
    predictions: list[int] = []
    for start in range(0, len(rows), 100):
        status, body = _post(url, _fields_document(rows[start:start + 100], fields, shift))
        assert status == 200, body
        predictions += [row[0] for row in body["predictions"][0]["values"]]
    return predictions


def _drift(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    return [m for m in measurements if m["monitor"] == "drift"][-1]


def _status(directory: Path) -> dict[str, Any]:
    return json.loads(_ok(_modelcycle(directory, "status", "--json")))


def test_tabular_csv_lifecycle_flags_a_shifted_feature(tmp_path: Path) -> None:
    directory = tmp_path / "tabular-e2e"
    rows = _init(directory, "pytorch")
    features = [name for name in rows[0] if name != LABEL]
    shuffled = features[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != features
    pid = None
    try:
        train = _ok(_modelcycle(directory, "train"))
        assert "test accuracy" in train
        status = _status(directory)
        assert status["metrics"]["test_accuracy"] >= 0.93, status["metrics"]

        _ok(_modelcycle(directory, "deploy"))
        endpoint = _status(directory)["endpoint"]
        url, pid = endpoint["url"], endpoint["pid"]
        assert process_alive(pid)

        score = _ok(_modelcycle(directory, "score", "--samples", "20"))
        correct = int(score.rsplit("(", 1)[-1].split("/")[0])
        assert correct >= 18, score
        assert "Predicted labels:" in score and "'malignant'" in score and "'benign'" in score

        # raw fields by name, in any order: the same records answer the same in both orders
        status_code, canonical = _post(url, _fields_document(rows[:5], features))
        assert status_code == 200, canonical
        status_code, reordered = _post(url, _fields_document(rows[:5], shuffled))
        assert status_code == 200, reordered
        assert reordered["predictions"] == canonical["predictions"]
        answer = reordered["predictions"][0]
        assert answer["fields"][:2] == ["prediction", "prediction_label"]
        assert all(["benign", "malignant"][r[0]] == r[1] for r in answer["values"]), answer  # sorted class names
        missing = [name for name in shuffled if name != SHIFTED]
        status_code, error = _post(url, {"input_data": [{"fields": missing, "values": [[
            r[f] if f == CATEGORICAL else float(r[f]) for f in missing] for r in rows[:2]]}]})
        assert status_code == 400 and f"missing field '{SHIFTED}'" in error["message"], error

        monitor = _ok(_modelcycle(directory, "monitor"))
        assert "held-out csv test records" in monitor
        assert f"│ {CATEGORICAL} " in monitor and "feature" in monitor
        assert "feature_drift upper_limit 0.25" in monitor and "mean_intensity_drift" not in monitor

        payload = _ok(_modelcycle(directory, "log-payload", "--samples", "113"))
        assert "scored 113 csv test records" in payload and "113 of 113 payload records in the store" in payload
        feedback = _ok(_modelcycle(directory, "log-feedback", "--samples", "100"))
        assert "100 feedback records (100 matched to logged payload)" in feedback

        # clean traffic: every row of the table, fields shuffled
        _score_all(url, rows, shuffled)
        clean = json.loads(_ok(_modelcycle(directory, "evaluate", "--json", "--no-plots", "--fail-on-violation")))
        drift = _drift(clean)
        assert drift["status"] == "finished" and drift["violations"] == [], drift
        assert drift["records"]["payload"] >= len(rows)
        assert 0 < drift["metrics"]["feature_drift"] < 0.25
        quality = [m for m in clean if m["monitor"] == "quality"][-1]
        assert quality["status"] == "finished" and quality["metrics"]["accuracy"] >= 0.9, quality

        # drifted traffic: one numerical feature moved by two standard deviations
        spread = statistics.pstdev(float(row[SHIFTED]) for row in rows)
        _score_all(url, rows[:MIN_SAMPLES], shuffled, shift=2 * spread)
        shifted = _modelcycle(directory, "evaluate", "--no-plots", "--fail-on-violation")
        assert shifted.returncode == 1, f"{shifted.stdout}\n{shifted.stderr}"
        assert "VIOLATION" in shifted.stdout and "threshold violated" in shifted.stdout
        assert f"feature_drift beyond 0.25: {SHIFTED} (kolmogorov_smirnov " in shifted.stdout, shifted.stdout
        drift = _drift(json.loads(_ok(_modelcycle(directory, "evaluations", "--json"))))
        assert drift["records"]["payload"] == MIN_SAMPLES
        violation = next(v for v in drift["violations"] if v["metric_id"] == "feature_drift")
        assert violation["features"] == [SHIFTED], violation

        _ok(_modelcycle(directory, "govern"))
        written = _ok(_modelcycle(directory, "factsheet", "--format", "md")).split()
        factsheet = Path(next(word for word in written if word.endswith(".md"))).read_text()
        assert "(113 records): accuracy" in factsheet and "size_band" in factsheet
    finally:
        cleanup = _modelcycle(directory, "cleanup")
        stop_deployed(directory)
    assert cleanup.returncode == 0, cleanup.stderr
    assert "'serving': 1" in cleanup.stdout
    assert pid is not None and not process_alive(pid)


def test_keras_tabular_example_trains_deploys_and_scores(tmp_path: Path) -> None:
    directory = tmp_path / "tabular-keras"
    rows = _init(directory, "keras")
    features = [name for name in rows[0] if name != LABEL]
    pid = None
    try:
        _ok(_modelcycle(directory, "train"))
        status = _status(directory)
        assert status["framework"] == "keras"
        assert status["metrics"]["test_accuracy"] >= 0.93, status["metrics"]

        _ok(_modelcycle(directory, "deploy"))
        endpoint = _status(directory)["endpoint"]
        url, pid = endpoint["url"], endpoint["pid"]
        predictions = _score_all(url, rows, features[::-1])
        truth = [["benign", "malignant"].index(row[LABEL]) for row in rows]
        accuracy = sum(p == y for p, y in zip(predictions, truth)) / len(rows)
        assert accuracy >= 0.93, accuracy
        document = _fields_document(rows[:1], features)
        document["input_data"][0]["fields"].append("extra")
        document["input_data"][0]["values"][0].append(1.0)
        status_code, error = _post(url, document)
        assert status_code == 400 and "unknown field 'extra'" in error["message"], error
    finally:
        cleanup = _modelcycle(directory, "cleanup")
        stop_deployed(directory)
    assert cleanup.returncode == 0, cleanup.stderr
    assert pid is not None and not process_alive(pid)
