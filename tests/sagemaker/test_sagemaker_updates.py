"""``deploy --force`` on an in-service SageMaker endpoint: blue/green through UpdateEndpoint, and
``serving.variants`` (weighted production variants), against a moto server on 127.0.0.1.

moto has no UpdateEndpoint: :class:`FakeEndpointUpdates` plays SageMaker's update service in front
of it (the endpoint goes Updating → InService on the new config, or Updating → RollingBack →
InService on the old one with a FailureReason) and records every SageMaker request in order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sagemaker")
pytest.importorskip("moto")

from conftest import mark_trained, write_use_case  # noqa: E402
from test_sagemaker_platform import (  # noqa: E402,F401 - the fixtures are used by name
    aws_json_request,
    BUCKET,
    REGION,
    ROLE,
    aws,
    moto_server,
    no_internet,
)

CANARY = [{"name": "blue", "weight": 9}, {"name": "canary", "weight": 1, "instance_type": "ml.m5.large"}]


class FakeEndpointUpdates:
    """WSGI middleware over moto: records every SageMaker request ``(action, request, answer)``
    and runs UpdateEndpoint as SageMaker does, over two DescribeEndpoint calls."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[tuple[str, dict[str, Any], str | None]] = []
        self.fail_next_update = False
        self._updates: dict[str, dict[str, Any]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        call = aws_json_request(environ, "SageMaker")
        if call is None:
            return self.app(environ, start_response)
        action, request = call
        answer = None
        if action == "UpdateEndpoint":
            return self._update(request, start_response)
        if action == "DescribeEndpoint":
            answer = self._advance(request["EndpointName"])
        self.log.append((action, request, answer))
        return self.app(environ, start_response)

    def actions(self) -> list[str]:
        return [action for action, _, _ in self.log]

    def requests(self, action: str) -> list[dict[str, Any]]:
        return [request for name, request, _ in self.log if name == action]

    def _backend(self) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends["123456789012"][REGION]

    def _update(self, request: dict[str, Any], start_response: Any) -> list[bytes]:
        backend = self._backend()
        endpoint = backend.endpoints.get(request["EndpointName"])
        if endpoint is None or request["EndpointConfigName"] not in backend.endpoint_configs:
            self.log.append(("UpdateEndpoint", request, "ValidationException"))
            payload = json.dumps({"__type": "ValidationException", "message": "Could not find endpoint or config"})
            start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")])
            return [payload.encode()]
        self.log.append(("UpdateEndpoint", request, "accepted"))
        self._updates[endpoint.endpoint_name] = {"config": request["EndpointConfigName"], "seen": 0,
                                                 "fail": self.fail_next_update}
        self.fail_next_update = False
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1")])
        return [json.dumps({"EndpointArn": endpoint.arn}).encode()]

    def _advance(self, name: str) -> str | None:
        backend = self._backend()
        endpoint, update = backend.endpoints.get(name), self._updates.get(name)
        if endpoint is None or update is None:
            return endpoint.endpoint_status if endpoint is not None else None
        update["seen"] += 1
        if update["seen"] == 1:
            endpoint.endpoint_status = "Updating"
        elif update["fail"] and update["seen"] == 2:
            endpoint.endpoint_status = "RollingBack"
        else:
            if not update["fail"]:
                config = backend.endpoint_configs[update["config"]]
                endpoint.endpoint_config_name = update["config"]
                endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
            else:
                endpoint.failure_reason = "The primary container for production variant canary did not pass the ping health check"
            endpoint.endpoint_status = "InService"
            del self._updates[name]
        return f"{endpoint.endpoint_status} {endpoint.endpoint_config_name}"


@pytest.fixture
def updates(aws: Any, monkeypatch: pytest.MonkeyPatch) -> FakeEndpointUpdates:
    from modelcycle.platforms.sagemaker import session

    fake = FakeEndpointUpdates(aws.app)
    aws.app = fake
    monkeypatch.setattr(session, "POLL_INTERVALS_S", (0.01,))
    return fake


@pytest.fixture
def sagemaker_use_case(tmp_path: Path, trained_model_dir: Path) -> Path:
    directory = write_use_case(tmp_path / "uc", name="sm-update",
                               serving={"platform": "sagemaker", "role": ROLE, "bucket": BUCKET})
    mark_trained(directory, trained_model_dir)
    return directory


def _sagemaker() -> Any:
    import boto3

    return boto3.client("sagemaker", region_name=REGION)


def test_force_redeploy_updates_in_place_with_weighted_variants_and_deletes_the_old_config_last(
    updates: FakeEndpointUpdates, sagemaker_use_case: Path
) -> None:
    from modelcycle.core.lifecycle import UseCase

    first = UseCase(sagemaker_use_case).deploy()
    name = first["name"]
    assert (first["endpoint_config_name"], first["model_name"], first["variants"]) == (name, name, ["AllTraffic"])
    begin = len(updates.log)

    second = UseCase(sagemaker_use_case, overrides={"serving.variants": CANARY}).deploy(force=True)
    log = updates.log[begin:]
    actions = [action for action, _, _ in log]
    assert "CreateEndpoint" not in actions and "DeleteEndpoint" not in actions  # the endpoint serves throughout

    # a new endpoint config (unique name) of two weighted variants of the current model
    (created,) = [request for action, request, _ in log if action == "CreateEndpointConfig"]
    new_config, new_model = created["EndpointConfigName"], second["model_name"]
    assert new_config.startswith(f"{name}-") and new_config != name and new_model != name
    assert created["ProductionVariants"] == [
        {"VariantName": "blue", "ModelName": new_model, "InitialInstanceCount": 1, "InstanceType": "ml.c5.xlarge",
         "InitialVariantWeight": 9.0},
        {"VariantName": "canary", "ModelName": new_model, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": 1.0},
    ]
    assert [r for a, r, _ in log if a == "UpdateEndpoint"] == [{"EndpointName": name, "EndpointConfigName": new_config}]

    # the old config (and the model only it used) is deleted only once the endpoint is InService on the new one
    in_service = next(i for i, (a, _, answer) in enumerate(log) if a == "DescribeEndpoint" and answer == f"InService {new_config}")
    update = actions.index("UpdateEndpoint")
    assert [answer for a, _, answer in log[update:in_service] if a == "DescribeEndpoint"] == [f"Updating {name}"]
    deleted_config = actions.index("DeleteEndpointConfig")
    assert log[deleted_config][1] == {"EndpointConfigName": name} and deleted_config > in_service
    assert [r for a, r, _ in log if a == "DeleteModel"] == [{"ModelName": name}]
    assert actions.index("DeleteModel") > in_service

    # the record and SageMaker agree: same endpoint, new config, both variants
    assert (second["name"], second["endpoint_config_name"], second["variants"]) == (name, new_config, ["blue", "canary"])
    client = _sagemaker()
    assert [c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]] == [new_config]
    assert [m["ModelName"] for m in client.list_models()["Models"]] == [new_model]
    live = client.describe_endpoint(EndpointName=name)
    assert {v["VariantName"]: v["CurrentWeight"] for v in live["ProductionVariants"]} == {"blue": 9.0, "canary": 1.0}
    use_case = UseCase(sagemaker_use_case)
    assert use_case.endpoint()["endpoint_config_name"] == new_config

    assert use_case.cleanup()["serving"] == 3  # endpoint, config, model
    assert client.list_endpoints()["Endpoints"] == [] and client.list_models()["Models"] == []


def test_a_failed_update_keeps_the_old_config_serving_and_says_so(
    updates: FakeEndpointUpdates, sagemaker_use_case: Path
) -> None:
    from modelcycle.core.errors import EndpointError
    from modelcycle.core.lifecycle import UseCase

    first = UseCase(sagemaker_use_case).deploy()
    name = first["name"]
    begin = len(updates.log)
    updates.fail_next_update = True
    with pytest.raises(EndpointError) as raised:
        UseCase(sagemaker_use_case, overrides={"serving.variants": CANARY}).deploy(force=True)
    message = str(raised.value)
    assert f"keeps serving its previous endpoint config {name}, which is kept" in message
    assert "RollingBack" not in message and "did not pass the ping health check" in message

    log = updates.log[begin:]
    (created,) = [r for a, r, _ in log if a == "CreateEndpointConfig"]
    assert [r for a, r, _ in log if a == "DeleteEndpointConfig"] == [{"EndpointConfigName": created["EndpointConfigName"]}]
    assert {"ModelName": name} not in [r for a, r, _ in log if a == "DeleteModel"]

    client = _sagemaker()
    live = client.describe_endpoint(EndpointName=name)
    assert (live["EndpointStatus"], live["EndpointConfigName"]) == ("InService", name)
    assert [c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]] == [name]
    assert [m["ModelName"] for m in client.list_models()["Models"]] == [name]
    kept = UseCase(sagemaker_use_case).endpoint()  # the state still names the serving endpoint and config
    assert (kept["name"], kept["endpoint_config_name"], kept["status"]) == (name, name, "InService")
    UseCase(sagemaker_use_case).cleanup()


def test_variants_on_a_first_deploy_serve_another_runs_model_beside_the_current_one(
    updates: FakeEndpointUpdates, trained_model_dir: Path, tmp_path: Path
) -> None:
    from modelcycle.core.config import ServingConfig
    from modelcycle.core.errors import ConfigError
    from modelcycle.platforms.sagemaker import endpoints

    work_dir = tmp_path / ".modelcycle"
    shutil.copytree(trained_model_dir, work_dir / "runs" / "abcd1234ef567890" / "model")
    settings = ServingConfig(platform="sagemaker", role=ROLE, bucket=BUCKET, instance_count=2, variants=[
        {"name": "current", "weight": 3}, {"name": "previous", "weight": 1, "run": "abcd1234", "instance_count": 1},
    ])
    record = endpoints.deploy("variants-uc-1", trained_model_dir, settings, work_dir)
    (created,) = updates.requests("CreateEndpointConfig")
    variants = {v["VariantName"]: v for v in created["ProductionVariants"]}
    assert (variants["current"]["InitialVariantWeight"], variants["current"]["InitialInstanceCount"]) == (3.0, 2)
    assert (variants["previous"]["InitialVariantWeight"], variants["previous"]["InitialInstanceCount"]) == (1.0, 1)
    assert variants["current"]["ModelName"] == record["model_name"]
    assert variants["previous"]["ModelName"].startswith("variants-uc-1-abcd1234-")
    assert sorted(record["model_names"]) == sorted(v["ModelName"] for v in variants.values())
    assert updates.requests("CreateEndpoint") == [{"EndpointName": "variants-uc-1",
                                                   "EndpointConfigName": created["EndpointConfigName"]}]
    assert "UpdateEndpoint" not in updates.actions()
    assert endpoints.delete(record) == 4  # endpoint, config, two models
    client = _sagemaker()
    assert client.list_models()["Models"] == [] and client.list_endpoint_configs()["EndpointConfigs"] == []

    unknown = settings.model_copy(update={"variants": [settings.variants[0].model_copy(update={"run": "ffff0000"})]})
    with pytest.raises(ConfigError, match=r"run 'ffff0000' matches 0 trained runs .*runs: abcd1234"):
        endpoints.deploy("variants-uc-2", trained_model_dir, unknown, work_dir)
    assert client.list_models()["Models"] == []  # refused before anything was created
