"""The Watson OpenScale backend through the real ``ibm-watson-openscale`` SDK, against a loopback
stand-in of the service that answers its REST calls and records them (tests/monitoring/openscale_fake.py).

One use case on real MNIST, deployed to a live local endpoint: monitor → payload → an outage of
the service → feedback → evaluate (OpenScale's quality run beside the local one, both checked
against a quality result this test computes itself from MNIST's labels and the endpoint's own
answers) → runs that fail or never finish → cleanup. The stand-in checks tokens and request bodies
(``fake.rejected`` lists what it refused) and can fail or stall what modelcycle creates.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SMALL, isolated_module_env, mark_trained, stop_deployed, write_use_case
from modelcycle.core.errors import ConfigError
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.monitoring.errors import MonitoringError
from modelcycle.core.monitoring.store import MonitoringStore
from openscale_fake import API_KEY, FakeOpenScale

pytest.importorskip("ibm_watson_openscale")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenScale]:
    with FakeOpenScale() as service:
        yield service


@pytest.fixture(scope="module")
def use_case_dir(fake: FakeOpenScale, trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                 data_dir: Path) -> Iterator[Path]:
    """A use case trained (state → the session's model), deployed, mirrored into the fake OpenScale."""
    with isolated_module_env(tmp_path_factory, data_dir) as mp:
        mp.setenv("OPENSCALE_KEY", API_KEY)
        directory = write_use_case(
            tmp_path_factory.mktemp("openscale") / "uc", name="wos-mnist", tracking={"enabled": False},
            monitoring={
                "backend": "openscale",
                "openscale": {"url": fake.url, "iam_url": fake.url, "service_instance_id": fake.instance_id,
                              "api_key_env": "OPENSCALE_KEY", "batch_records": 150},
                "quality": {"min_feedback_data_size": 50,
                            "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.7}]},
                "drift": {"enabled": False},
            },
            **SMALL)
        mark_trained(directory, trained_model_dir)
        try:
            UseCase(directory).deploy()
            yield directory
        finally:
            stop_deployed(directory)


def _store(directory: Path) -> MonitoringStore:
    return MonitoringStore(f"sqlite:///{directory / '.modelcycle' / 'monitoring.db'}")


def _payload_ids(fake: FakeOpenScale, data_set_id: str) -> list[str]:
    return [record["scoring_id"] for record in fake.records.get(data_set_id, [])]


def _independent_quality(fake: FakeOpenScale, ids: dict[str, Any], endpoint: dict[str, Any], token: str | None,
                         test: Any) -> dict[str, float]:
    """The quality of the rows OpenScale holds as feedback, computed without trusting what
    modelcycle sent as label or prediction: each row's image (the pixels of its payload record) is
    found among the MNIST test images, labelled from the dataset and scored again at the endpoint;
    scikit-learn computes the metrics. (This adds one request's payload records to the store.)"""
    import io

    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    position = {image.tobytes(): i for i, image in enumerate(test.images)}
    pixels = {r["scoring_id"]: np.asarray(r["request"]["values"][0][0], np.uint8).tobytes()
              for r in fake.records[ids["payload_data_set_id"]]}
    rows = [dict(zip(r["fields"], v)) for r in fake.records[ids["feedback_data_set_id"]] for v in r["values"]]
    positions = np.array([position[pixels[row["scoring_id"]]] for row in rows])
    buffer = io.BytesIO()
    np.save(buffer, test.images[positions][:, None], allow_pickle=False)
    request = urllib.request.Request(f"{endpoint['url']}/invocations", data=buffer.getvalue(), method="POST", headers={
        "Content-Type": "application/x-npy", "Accept": "application/x-npy",
        **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=60) as response:
        predicted = np.load(io.BytesIO(response.read()), allow_pickle=False).argmax(axis=1)
    truth = test.labels[positions]
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="weighted", zero_division=0)
    return {"records": len(rows), "accuracy": accuracy_score(truth, predicted), "weighted_precision": precision,
            "weighted_recall": recall, "weighted_f_measure": f1}


def test_the_stand_in_says_no(fake: FakeOpenScale) -> None:
    """Tokens it never issued get 401 and bad bodies 400, both in the service's error shape."""
    def call(path: str, body: Any, token: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"{fake.url}/openscale/{fake.instance_id}/v2/{path}", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    form = urllib.parse.urlencode({"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": API_KEY}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{fake.url}/identity/token", data=form), timeout=10) as response:
        token = json.loads(response.read())["access_token"]
    status, document = call("subscriptions", {}, token[:-1] + "x")
    assert status == 401 and document["errors"][0]["code"] == "AIQHS0401E" and document["trace"]
    status, document = call("subscriptions", {"data_mart_id": "nope"}, token)
    assert status == 400 and document["errors"][0]["message"] == "service_provider_id: missing required property"
    status, document = call("service_providers", {"name": "x", "service_type": "nope", "credentials": {"url": "u"}}, token)
    assert status == 400 and "service_type: 'nope' is not one of" in document["errors"][0]["message"]
    assert [entry[2] for entry in fake.rejected] == [401, 400, 400]
    fake.rejected.clear()


def test_failed_and_stuck_creations_leave_nothing_behind(use_case_dir: Path, fake: FakeOpenScale,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A subscription that ends in error or stays preparing, and a quality monitor that never gets
    active: a clear error each time, and neither OpenScale nor the local store keeps a subscription."""
    monkeypatch.setenv("OPENSCALE_KEY", API_KEY)
    quick = {"monitoring.openscale.timeout_s": 1}
    cases = [("subscriptions", "error", r"adding the subscription ended 'error': the service could not finish"),
             ("subscriptions", "preparing", r"adding the subscription did not finish within 1 s \(state 'preparing'"),
             ("monitor_instances", "preparing", r"creating the quality monitor did not finish within 1 s")]
    try:
        for collection, outcome, message in cases:
            fake.create_outcome = {collection: outcome}
            with pytest.raises(MonitoringError, match=rf"Watson OpenScale at {fake.url}: {message}"):
                UseCase(use_case_dir, overrides=quick).monitor()
            assert fake.resources["subscriptions"] == {} and fake.resources["monitor_instances"] == {}, outcome
            assert fake.resources["data_sets"] == {}
            assert _store(use_case_dir).active_subscription("wos-mnist") is None
            assert UseCase(use_case_dir).status()["monitored"] is False
    finally:
        fake.create_outcome = {}
    assert fake.rejected == []


def test_openscale_lifecycle_on_real_mnist(use_case_dir: Path, fake: FakeOpenScale, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from modelcycle.core.datasets import load_dataset

    monkeypatch.setenv("OPENSCALE_KEY", API_KEY)
    # the service unreachable: a clear error, and no half-made subscription left behind
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: refused
    try:
        with pytest.raises(MonitoringError, match=rf"Watson OpenScale at {nowhere}: sign-in failed"):
            UseCase(use_case_dir, overrides={"monitoring.openscale.url": nowhere, "monitoring.openscale.iam_url": nowhere}).monitor()
    finally:
        closed.close()
    assert _store(use_case_dir).active_subscription("wos-mnist") is None
    assert UseCase(use_case_dir).status()["monitored"] is False

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    use_case = UseCase(use_case_dir)
    subscription = use_case.monitor()
    assert "REQUESTS_CA_BUNDLE" not in os.environ  # the SDK's process-wide setting is undone
    ids = subscription["openscale"]
    deployment = subscription["deployment_id"]
    assert set(fake.resources["subscriptions"]) == {ids["subscription_id"]}

    # the subscription: what the service needs to know about an image classifier and its endpoint
    added = fake.calls("POST", "/v2/subscriptions")[-1]
    assert added["asset"]["problem_type"] == "multiclass" and added["asset"]["input_data_type"] == "unstructured_image"
    assert added["deployment"]["deployment_id"] == deployment and added["deployment"]["url"] == use_case.endpoint()["url"]
    assert added["asset_properties"]["prediction_field"] == "prediction"
    assert added["asset_properties"]["probability_fields"] == ["probability"]
    # the quality monitor: its threshold under the key `value` (mlmonitor's `lower_limit` key is ignored)
    quality = [body for body in fake.calls("POST", "/v2/monitor_instances") if body["monitor_definition_id"] == "quality"][-1]
    assert quality["parameters"] == {"min_feedback_data_size": 50}
    assert quality["thresholds"] == [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.7}]
    assert quality["target"] == {"target_type": "subscription", "target_id": ids["subscription_id"]}

    # payload records reach OpenScale as PayloadRecords, with the pixels and probabilities scored
    payload = use_case.log_payload(samples=300)
    assert payload["stored"] == 300 and payload["openscale"] == {"payload": 300, "feedback": 0}
    sent = {record["scoring_id"]: record for record in fake.records[ids["payload_data_set_id"]]}
    assert set(sent) == set(payload["scoring_ids"])
    test = load_dataset("mnist").test
    first = sent[payload["scoring_ids"][0]]
    assert np.array_equal(np.asarray(first["request"]["values"][0][0], np.uint8), test.images[0][None])
    stored = {r["scoring_id"]: r for r in _store(use_case_dir).payload_records(deployment, with_input=False)}
    assert first["response"]["fields"] == ["prediction", "probability"]
    prediction, probabilities = first["response"]["values"][0]
    assert prediction == stored[payload["scoring_ids"][0]]["prediction"] == int(np.argmax(probabilities))
    assert first["response_time"] >= 0 and first["scoring_timestamp"].endswith("Z")

    # an outage: the records stay in the local store and go out with the next call, once each
    posts_before = len(fake.calls("POST", "/records"))
    fake.fail_next["/records"] = 503
    with pytest.raises(MonitoringError, match=r"Watson OpenScale at .*storing payload records failed") as failure:
        use_case.log_payload(samples=200, offset=300)
    assert API_KEY not in str(failure.value)
    assert _store(use_case_dir).payload_count(deployment) == 500
    feedback = use_case.log_feedback(samples=120)
    assert feedback["openscale"] == {"payload": 200, "feedback": 120}
    payload_ids = _payload_ids(fake, ids["payload_data_set_id"])
    assert len(payload_ids) == len(set(payload_ids)) == 500
    rows = [dict(zip(r["fields"], v)) for r in fake.records[ids["feedback_data_set_id"]] for v in r["values"]]
    assert len(rows) == 120 and all(row["scoring_id"] in sent or row["scoring_id"] in payload_ids for row in rows)
    assert len(fake.calls("POST", "/records")) - posts_before == 1 + 2 + 1  # refused, 2 payload batches, 1 feedback

    # evaluate: the local quality monitor and OpenScale's run over the same forwarded records agree
    sign_ins = len(fake.calls("POST", "/identity/token"))
    (quality_result,) = use_case.evaluate(plots=False)
    assert len(fake.calls("POST", "/identity/token")) == sign_ins + 1  # one client sends the records and runs the monitor
    remote = quality_result["details"]["openscale"]
    assert remote["state"] == "finished" and remote["run_id"] in fake.resources["runs"]
    assert remote["metrics"]["accuracy"] == pytest.approx(quality_result["metrics"]["accuracy"], abs=1e-9)
    assert remote["limits"]["accuracy"] == {"lower_limit": 0.7}
    assert remote["issue_count"] == quality_result["issue_count"] == int(quality_result["metrics"]["accuracy"] < 0.7)
    assert use_case.evaluations()[-1]["details"]["openscale"]["run_id"] == remote["run_id"]
    posts = len(fake.calls("POST", "/records"))
    cli = subprocess.run([sys.executable, "-m", "modelcycle.cli", "-C", str(use_case_dir), "evaluate", "--no-plots"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert re.search(r"Watson OpenScale quality run \S+: finished; accuracy 0\.\d{4}", cli.stdout), cli.stdout
    assert len(fake.calls("POST", "/records")) == posts  # nothing is sent twice
    assert fake.rejected == []  # every token and body modelcycle sent was accepted

    # both agree with a quality result computed here from MNIST's labels and the endpoint's answers
    truth = _independent_quality(fake, ids, use_case.endpoint(), use_case.config.endpoint_token(), test)
    assert truth["records"] == 120
    for metric in ("accuracy", "weighted_precision", "weighted_recall", "weighted_f_measure"):
        assert remote["metrics"][metric] == pytest.approx(truth[metric], abs=1e-9), metric
        assert quality_result["metrics"][metric] == pytest.approx(truth[metric], abs=1e-9), metric
    rescored = 120  # the payload records of that request

    # a wrong key: a clear error that never shows it, and nothing stored is lost
    monkeypatch.setenv("OPENSCALE_KEY", "not-the-key")
    with pytest.raises(MonitoringError, match="sign-in failed") as failure:
        UseCase(use_case_dir).evaluate(plots=False)
    assert "not-the-key" not in str(failure.value)
    monkeypatch.delenv("OPENSCALE_KEY")
    with pytest.raises(MonitoringError, match="set the environment variable OPENSCALE_KEY"):
        UseCase(use_case_dir).log_feedback(samples=10)
    monkeypatch.setenv("OPENSCALE_KEY", API_KEY)
    assert _store(use_case_dir).feedback_count(deployment) == 130

    # monitoring again replaces the OpenScale subscription; the new one receives every record
    renewed = UseCase(use_case_dir).monitor(force=True)["openscale"]
    assert set(fake.resources["subscriptions"]) == {renewed["subscription_id"]} != {ids["subscription_id"]}
    assert _store(use_case_dir).forwarded_count(ids["payload_data_set_id"]) == 0
    assert UseCase(use_case_dir).log_feedback(samples=10)["openscale"] == {"payload": 500 + rescored, "feedback": 140}
    ids = renewed

    # a quality run that ends in error is reported with the service's reason; one that never ends
    # is a clear error and stores no measurement
    fake.run_outcome = "error"
    try:
        from modelcycle.cli import main

        capsys.readouterr()
        assert main(["-C", str(use_case_dir), "evaluate", "--no-plots"]) == 0  # the local evaluation stands
        out = capsys.readouterr().out
        assert re.search(r"Watson OpenScale quality run \S+: error — the service could not finish the operation \(injected\)",
                         out), out
        failed = UseCase(use_case_dir).evaluations()[-1]["details"]["openscale"]
        assert failed["state"] == "error" and "metrics" not in failed and failed["run_id"] in fake.resources["runs"]
        fake.run_outcome = "running"
        evaluations = len(UseCase(use_case_dir).evaluations())
        with pytest.raises(MonitoringError, match=r"running the quality monitor did not finish within 1 s \(state 'running'"):
            UseCase(use_case_dir, overrides={"monitoring.openscale.timeout_s": 1}).evaluate(plots=False)
        assert len(UseCase(use_case_dir).evaluations()) == evaluations
    finally:
        fake.run_outcome = None
    assert fake.rejected == []

    # cleanup deletes the OpenScale subscription (its data sets go with it) and the local one
    removed = UseCase(use_case_dir).cleanup()
    assert removed["openscale"] == 1 and removed["monitoring"] == 1
    assert fake.calls("DELETE", f"/v2/subscriptions/{ids['subscription_id']}")
    assert fake.resources["subscriptions"] == {} and ids["payload_data_set_id"] not in fake.resources["data_sets"]
    assert _store(use_case_dir).forwarded_count(ids["payload_data_set_id"]) == 0


def test_openscale_backend_needs_an_instance(tmp_path: Path) -> None:
    """The plugin's settings class validates ``monitoring.openscale`` when the backend loads:
    before the monitor stage changes anything."""
    directory = write_use_case(tmp_path / "uc", monitoring={"backend": "openscale"})
    with pytest.raises(ConfigError, match="monitoring.openscale.service_instance_id"):
        UseCase(directory).monitor()
    with pytest.raises(ConfigError, match=r"monitoring\.openscale\.batch_records: .*(got 0)"):
        UseCase(directory, overrides={"monitoring.openscale": {"service_instance_id": "x", "batch_records": 0}}).evaluate()
    assert UseCase(directory).state().stages.get("monitor") is None
