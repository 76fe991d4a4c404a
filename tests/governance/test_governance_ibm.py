"""The IBM AI Factsheets backend against a fake service on loopback.

``ibm-aigov-facts-client`` really runs (in modelcycle's worker process) and talks HTTP to
``FakeFactsheets`` through its supported Cloud Pak for Data ``service_url``; the tests assert on
the requests the fake received: authentication, the notebook experiment with the run's facts, the
external model asset with its deployment details, tracking into the AI use case, the environment
(stage), custom facts, and deletion on cleanup. The fake checks bearer tokens and request bodies
(``rejected`` lists what it refused), and can fail or never answer a call: a publish that fails
half-way leaves nothing in the catalog, one that gets no answer is a clear time-out. No request
leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from governance_fakes import API_KEY, fake_factsheets, ibm_governance, open_use_case, trained_use_case  # noqa: F401

from modelcycle.cli import main
from modelcycle.core.governance.errors import BackendError
from modelcycle.core.governance.service import Governance

pytest.importorskip("ibm_aigov_facts_client")


@pytest.fixture(scope="module")
def served(trained_use_case: Path) -> Iterator[Path]:
    from modelcycle.core.lifecycle import UseCase

    try:
        yield trained_use_case
    finally:
        UseCase(trained_use_case).cleanup()  # stops the endpoint by pid


def _overrides(fake: Any) -> dict[str, Any]:
    return {f"governance.{k}": v for k, v in ibm_governance(fake).items()}


def _cli(directory: Path, database: Path, fake: Any, *argv: str) -> list[str]:
    sets = [f"governance.database_url=sqlite:///{database}", *(f"{k}={v}" for k, v in _overrides(fake).items())]
    return ["-C", str(directory), *[item for pair in (("--set", s) for s in sets) for item in pair], *argv]


def _pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in items}


def test_govern_stage_facts_and_cleanup_reach_ibm(served: Path, tmp_path: Path, fake_factsheets: Any,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = fake_factsheets
    monkeypatch.setenv("TEST_IBM_API_KEY", API_KEY)
    use_case = open_use_case(served, tmp_path / "gov.db", **_overrides(fake))
    endpoint = use_case.deploy()
    governance = Governance(use_case)
    governance.set_fact("owner", "Jane Doe")
    governance.set_fact("ticket", "CHG-1234")  # not defined in the catalog
    assert fake.requests == []  # no remote asset yet: facts stay local until govern

    result = use_case.govern()
    asset = governance.store.get_asset(result["asset_id"])
    remote = result["remote"]
    assert result["backend"] == "ibm" and result["stage"] == "test" and asset["remote"]["asset_id"] == remote["asset_id"]
    assert fake.unhandled == []
    [auth] = fake.calls("POST", "/icp4d-api/v1/authorize")
    assert auth["body"]["api_key"] == API_KEY and auth["body"]["username"] == "admin"
    assert all(r["authorized"] for r in fake.requests if r is not auth)

    [export] = fake.calls("POST", "/v1/aigov/factsheet/notebook_experiments")  # manual export (plain PyTorch)
    assert export["query"] == {"external_model": "True"}
    experiment = export["body"]["notebook_experiment"]
    assert experiment["name"] == asset["name"]
    [run] = experiment["runs"]
    metrics, params, tags = _pairs(run["metrics"]), _pairs(run["params"]), _pairs(run["tags"])
    assert metrics["test_accuracy"] == pytest.approx(asset["facts"]["metrics"]["test_accuracy"])
    assert params["learning_rate"] == "0.005" and params["model.hidden_channels"] == "20"
    assert tags["job_name"] == asset["name"] and tags["user_entry_point"] == "code/inference.py"
    assert tags["modelcycle.run_id"] == asset["run_id"] and tags["endpoint_name"] == endpoint["name"]
    for name, digest in asset["dataset_checksums"].items():
        assert tags[f"dataset.md5.{name}"] == digest

    [stub] = fake.calls("PUT", "/v1/aigov/model_inventory/model_stub")
    identifier = f"modelcycle:gov-mnist:{asset['run_id']}"
    assert stub["query"]["catalog_id"] == fake.catalog_id and stub["query"]["experiment_name"] == asset["name"]
    body = stub["body"]
    assert body["model_id"] == hashlib.md5(identifier.encode()).hexdigest() and body["external_model_identifier"] == identifier
    assert body["name"] == asset["name"] and body["catalog_id"] == fake.catalog_id
    assert body["external_model_provider"] == "Custom Environment" and body["model_type"] == "pytorch"
    details = body["deployment_details"]
    assert details["name"] == endpoint["name"] and details["external_identifier"] == endpoint["name"]
    assert details["id"] == hashlib.md5(endpoint["name"].encode()).hexdigest() and details["type"] == "online"
    assert details["scoring_endpoint"] == endpoint["url"] + "/invocations"
    assert asset["archive"] in details["description"] and "code/inference.py" in details["description"]
    [stored] = fake.stubs()
    assert stored["metadata"]["asset_id"] == remote["asset_id"]

    [track] = fake.calls("POST", f"/v1/aigov/model_inventory/models/{remote['asset_id']}/model_entry")
    assert track["body"] == {"model_entry_catalog_id": fake.catalog_id, "model_entry_asset_id": fake.model_entry_id,
                             "version_details": {"approach_id": "approach-0001", "number": "0.1.0"}}
    assert remote["model_entry_id"] == fake.model_entry_id and remote["version"] == "0.1.0"
    [environment] = fake.calls("PUT", "/environment")
    assert environment["body"] == {"target_environment": "Test"}
    [facts] = fake.calls("PATCH", f"/v2/assets/{remote['asset_id']}/attributes/modelfacts_user")
    assert facts["body"] == [{"op": "add", "path": "/owner", "value": "Jane Doe"}]
    assert remote["facts_skipped"] == ["ticket"]

    # an explicit move: the environment follows; the facts are not exported again
    assert main(_cli(served, tmp_path / "gov.db", fake, "govern", "--stage", "validate", "--reason", "QA sign-off")) == 0
    out = capsys.readouterr().out
    assert f"External model asset saved successfully under asset_id {remote['asset_id']}" in out
    assert [r["body"]["target_environment"] for r in fake.calls("PUT", "/environment")] == ["Test", "Validate"]
    assert len(fake.calls("POST", "/notebook_experiments")) == 1 and len(fake.stubs()) == 1

    # a custom fact set later goes straight to the asset
    assert main(_cli(served, tmp_path / "gov.db", fake, "facts", "set", "risk_tier", "3")) == 0
    last_patch = fake.calls("PATCH", "/attributes/modelfacts_user")[-1]
    assert {"op": "add", "path": "/risk_tier", "value": 3} in last_patch["body"]

    # the API key is never written anywhere modelcycle writes
    for path in [*(served / ".modelcycle").rglob("*"), tmp_path / "gov.db"]:
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path

    assert use_case.cleanup(governance=True)["factsheets"] == 1  # what 'modelcycle cleanup --governance' calls
    assert fake.calls("DELETE", f"/v1/aigov/model_inventory/models/{remote['asset_id']}/model_entry")
    assert fake.calls("DELETE", f"/v2/assets/{remote['asset_id']}")
    assert fake.stubs() == [] and fake.model_entry_id in fake.assets  # the AI use case itself is kept
    assert fake.unhandled == [] and fake.rejected == []  # every token and body was accepted
    assert not (served / ".modelcycle" / "governance").exists()


def test_the_factsheets_stand_in_says_no(fake_factsheets: Any) -> None:
    """A token it never issued gets 401; a model stub without its identifier, a fact the catalog
    does not define or of the wrong type get 400 naming the property."""
    fake = fake_factsheets

    def call(method: str, path: str, body: Any, token: str) -> tuple[int, Any]:
        request = urllib.request.Request(f"{fake.url}{path}", data=json.dumps(body).encode(), method=method,
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, document = call("POST", "/icp4d-api/v1/authorize", {"username": "admin", "api_key": "wrong"}, "")
    assert status == 401 and document["errors"][0]["code"] == "authentication_failed" and document["trace"]
    _, document = call("POST", "/icp4d-api/v1/authorize", {"username": "admin", "api_key": API_KEY}, "")
    token = document["token"]
    stub = {"model_id": "m", "name": "n", "external_model_provider": "Custom Environment", "catalog_id": fake.catalog_id}
    assert call("PUT", "/v1/aigov/model_inventory/model_stub", stub, token + "x")[0] == 401
    status, document = call("PUT", "/v1/aigov/model_inventory/model_stub", stub, token)
    assert (status, document["errors"][0]["message"]) == (400, "external_model_identifier: missing required property")
    patch = [{"op": "add", "path": "/risk_tier", "value": "high"}]
    status, document = call("PATCH", f"/v2/assets/{fake.model_entry_id}/attributes/modelfacts_user", patch, token)
    assert (status, document["errors"][0]["message"]) == (400, "[0].value: risk_tier is of type integer, got 'high'")
    status, document = call("PATCH", f"/v2/assets/{fake.model_entry_id}/attributes/modelfacts_user",
                            [{"op": "add", "path": "/ticket", "value": "x"}], token)
    assert (status, document["errors"][0]["message"]) == (400, "[0].path: ticket is not a fact defined for modelfacts_user")
    assert [r["status"] for r in fake.rejected] == [401, 401, 400, 400, 400] and fake.stubs() == []


def test_a_publish_that_fails_half_way_leaves_nothing_in_the_catalog(served: Path, tmp_path: Path, fake_factsheets: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracking into the AI use case fails after the experiment and the model asset were made:
    modelcycle reports the service's refusal and removes both, so nothing is orphaned; the next
    govern publishes once."""
    fake = fake_factsheets
    monkeypatch.setenv("TEST_IBM_API_KEY", API_KEY)
    use_case = open_use_case(served, tmp_path / "gov.db", **_overrides(fake))
    use_case.deploy()
    fake.fail_next["/model_entry"] = 500
    with pytest.raises(BackendError, match=r"IBM AI Factsheets refused 'publish': .*injected failure"):
        use_case.govern()
    assert fake.calls("POST", "/model_entry") and fake.calls("DELETE", "/v2/assets/")
    assert fake.stubs() == [] and [a for a in fake.assets.values() if a["metadata"]["asset_type"] == "notebook_experiment"] == []
    assert all((a.get("remote") or {}).get("asset_id") is None for a in Governance(use_case).assets())
    remote = use_case.govern()["remote"]
    assert [s["metadata"]["asset_id"] for s in fake.stubs()] == [remote["asset_id"]] and remote["tracked"] is True
    assert fake.rejected == [] and fake.unhandled == []


def test_a_service_that_does_not_answer_is_a_clear_time_out(served: Path, tmp_path: Path, fake_factsheets: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_factsheets
    monkeypatch.setenv("TEST_IBM_API_KEY", API_KEY)
    use_case = open_use_case(served, tmp_path / "gov.db", **{**_overrides(fake), "governance.timeout_s": 5})
    use_case.deploy()
    fake.stall.add("/v1/aigov/model_inventory/model_stub")
    with pytest.raises(BackendError, match=r"IBM AI Factsheets did not answer within 5 s \(governance.timeout_s\); log: "):
        use_case.govern()
    assert fake.stubs() == []
    assert all((a.get("remote") or {}).get("asset_id") is None for a in Governance(use_case).assets())


def test_missing_api_key_fails_before_anything_changes(served: Path, tmp_path: Path, fake_factsheets: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_IBM_API_KEY", raising=False)
    use_case = open_use_case(served, tmp_path / "gov.db", **_overrides(fake_factsheets))
    with pytest.raises(BackendError, match="set the environment variable TEST_IBM_API_KEY"):
        use_case.govern()
    assert fake_factsheets.requests == []
    assert Governance(use_case).exists() is False  # nothing recorded locally either


def test_autolog_frameworks_export_through_the_autolog_payload(tmp_path: Path, fake_factsheets: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras (autologged by the facts client) goes through ``export_payload``, not the manual path."""
    from conftest import write_use_case

    from modelcycle.core.lifecycle import UseCase
    from modelcycle.platforms.ibm.factsheets import IBMFactsheetsBackend

    monkeypatch.setenv("TEST_IBM_API_KEY", API_KEY)
    directory = write_use_case(tmp_path / "keras-uc", name="keras-uc", framework="keras", capture="autolog", model={})
    use_case = UseCase(directory, overrides={"governance.database_url": f"sqlite:///{tmp_path / 'gov.db'}",
                                             **_overrides(fake_factsheets)})
    governance = Governance(use_case)
    facts = {
        "identity": {"use_case": "keras-uc", "run_id": "f" * 32, "mlflow_run_id": "e" * 32, "job_name": "keras-uc-ffffffff",
                     "framework": "keras", "framework_version": "0.1.0", "modelcycle_version": "0.1.0",
                     "libraries": {"keras": "3.15.1", "tensorflow": "2.20.0"}},
        "params": {"epochs": "2", "batch_size": "64"},
        "metrics": {"test_accuracy": 0.97, "test_loss": 0.09},
        "history": [{"epoch": 1, "test_accuracy": 0.95}, {"epoch": 2, "test_accuracy": 0.97}],
        "tags": {"mlflow.autologging": "keras", "job_name": "keras-uc-ffffffff"},
        "dataset": {"name": "mnist", "checksums": {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3"},
                    "train_records": 60000, "test_records": 10000},
        "model": {}, "artifacts": {"entry_point": "code/inference.py"},
    }
    asset = governance.store.add_asset(governance.record["id"], {
        "run_id": "f" * 32, "mlflow_run_id": "e" * 32, "name": "keras-uc-ffffffff", "framework": "keras",
        "framework_version": "0.1.0", "created_at": "2026-01-01T00:00:00+00:00", "model_dir": str(tmp_path),
        "archive": None, "dataset_name": "mnist", "dataset_checksums": facts["dataset"]["checksums"], "facts": facts,
    }, "tester", reason="test")

    remote = governance.backend.publish(governance, asset, None)
    assert isinstance(governance.backend, IBMFactsheetsBackend)
    assert remote["asset_id"] and remote["tracked"] is True
    [export] = fake_factsheets.calls("POST", "/v1/aigov/factsheet/notebook_experiments")
    [run] = export["body"]["notebook_experiment"]["runs"]
    assert _pairs(run["params"])["epochs"] == "2"
    metric_values = {m["key"]: m["value"] for m in run["metrics"]} if isinstance(run["metrics"], list) else run["metrics"]
    assert metric_values["test_accuracy"] == pytest.approx(0.97)
    assert any("autolog" in item["key"] and item["value"] == "keras" for item in run["tags"])
    assert fake_factsheets.calls("PUT", "/model_stub")[0]["body"].get("deployment_details") is None
    assert [r["body"] for r in fake_factsheets.calls("PUT", "/environment")] == [{"target_environment": "Develop"}]
    assert fake_factsheets.unhandled == []


def test_ibm_cloud_path_through_a_redirected_transport(trained_use_case: Path, tmp_path: Path, fake_factsheets: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``service_url`` the client talks to IBM Cloud at fixed hosts; the worker runs with its
    ``requests`` transport redirected to the fake (see ``ibm_cloud_redirect``), so the IAM token
    exchange, the instance lookup and the same factsheet calls are recorded with their real URLs."""
    from modelcycle.platforms.ibm.factsheets import IBMFactsheetsBackend

    fake = fake_factsheets
    monkeypatch.setenv("TEST_IBM_API_KEY", API_KEY)
    monkeypatch.setenv("FAKE_FACTSHEETS_URL", fake.url)
    monkeypatch.setenv("PYTHONPATH", f"{Path(__file__).parent}:{__import__('os').environ.get('PYTHONPATH', '')}")
    # the settings written under governance.ibm (the backend's own section) rather than flat
    overrides = {k.replace("governance.", "governance.ibm."): v for k, v in _overrides(fake).items()
                 if k not in ("governance.backend", "governance.service_url", "governance.username")}
    use_case = open_use_case(trained_use_case, tmp_path / "gov.db", **{"governance.backend": "ibm", **overrides})
    settings = Governance(use_case).backend.settings
    assert settings.catalog_id == fake.catalog_id and settings.service_url is None and settings.timeout_s == 180
    governance = Governance(use_case, backend=IBMFactsheetsBackend(settings, worker_module="ibm_cloud_redirect"))
    governance.sync()
    asset = governance.assets()[0]
    endpoint = {"name": "gov-mnist-sagemaker", "url": "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/gov-mnist-sagemaker",
                "platform": "sagemaker", "run_id": asset["run_id"], "started_at": "2026-01-01T00:00:00+00:00",
                "image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6-cpu-py312",
                "model_data": "s3://bucket/gov-mnist/model.tar.gz"}
    result = governance.govern(endpoint)
    assert result["remote"]["asset_id"] and result["remote"]["service_url"] == "IBM Cloud (dallas)"
    assert fake.unhandled == [] and all(r["original_url"] for r in fake.requests)
    hosts = {urlsplit(r["original_url"]).hostname for r in fake.requests}
    assert hosts == {"iam.cloud.ibm.com", "api.dataplatform.cloud.ibm.com", "resource-controller.cloud.ibm.com"}
    [introspect] = fake.calls("POST", "/identity/introspect")
    assert introspect["query"]["apikey"] == API_KEY
    token = fake.calls("POST", "/identity/token")
    assert token and "grant_type=urn" in token[0]["body"]
    [stub] = fake.calls("PUT", "/v1/aigov/model_inventory/model_stub")
    assert stub["query"]["instance_id"] == fake.instance_id
    assert stub["body"]["external_model_provider"] == "Amazon SageMaker"
    assert stub["body"]["deployment_details"]["scoring_endpoint"] == endpoint["url"] + "/invocations"
    assert endpoint["model_data"] in stub["body"]["deployment_details"]["description"]
    assert endpoint["image"] in stub["body"]["deployment_details"]["description"]
    assert fake.calls("POST", "/model_entry") and fake.calls("PUT", "/environment")
    [copied] = fake.calls("POST", f"/v2/assets/{result['remote']['asset_id']}/attributes")  # IBM Cloud's experiment sync
    assert copied["query"]["action"] == "create" and copied["body"]["name"] == "notebook_experiment"
    [run] = fake.assets[result["remote"]["asset_id"]]["entity"]["notebook_experiment"]["runs"]
    assert _pairs(run["metrics"])["test_accuracy"] == pytest.approx(asset["facts"]["metrics"]["test_accuracy"])
    assert all(r["authorized"] for r in fake.requests if not r["path"].startswith("/identity/"))
