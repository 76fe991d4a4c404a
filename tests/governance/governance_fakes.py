"""Governance test support: trained use cases, a fake IBM AI Factsheets service on loopback, and
governance backends installed through fake entry points.

``FakeFactsheets`` is a small stateful HTTP service (a ``ThreadingHTTPServer`` on 127.0.0.1)
answering the REST calls ``ibm-aigov-facts-client`` makes against a Cloud Pak for Data
``service_url``: the token endpoint, the factsheet heartbeat, notebook experiments, model stubs,
assets, fact definitions and attributes, AI use case approaches, tracking and environments. It
records every request (method, path, query, JSON body, whether it carried the bearer token), so
tests assert on what the client library actually sent. Unknown routes answer 404 and are kept in
``unhandled``.

Like the service it says no: a request without a bearer token this stand-in issued (at
``/icp4d-api/v1/authorize`` or the IAM ``/identity/token``) gets 401, and a body missing what the
API requires (model stub, notebook experiment, tracking, environment, custom facts of the types
the catalog defines) gets 400 naming the property; both in the platform's error shape
(``{"trace", "errors": [{"code", "message"}]}``) and listed in ``rejected``. ``fail_next[suffix]
= status`` fails the next request whose path ends with ``suffix``; ``stall`` holds every request
whose path contains one of its fragments until the service stops (a service that does not answer).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from loopback_service import LoopbackJSONService, missing_property as _missing

API_KEY = "test-api-key-5f3a9c"  # what the fake accepts; tests check it never leaks
ENVIRONMENTS = ("Develop", "Test", "Validate", "Operate")
FACT_TYPES = {"string": str, "integer": int, "boolean": bool, "number": (int, float), "date": str}


class FakeFactsheets(LoopbackJSONService):
    """A recording stand-in for the watsonx.governance (AI Factsheets) REST API."""

    name = "fake-factsheets"

    def __init__(self, catalog_id: str = "catalog-0001", model_entry_id: str = "usecase-0001",
                 defined_facts: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.catalog_id = catalog_id
        self.model_entry_id = model_entry_id
        self.requests: list[dict[str, Any]] = []
        self.unhandled: list[dict[str, Any]] = []
        self.assets: dict[str, dict[str, Any]] = {
            model_entry_id: {
                "metadata": {"asset_id": model_entry_id, "name": "MNIST digits", "asset_type": "model_entry",
                             "catalog_id": catalog_id},
                "entity": {"model_entry": {"data_model": "mastercopy1.0"}},
            }
        }
        self.approaches = [{"id": "approach-0001", "name": "Default approach", "description": "", "icon": "Packages",
                            "icon_color": "Gray", "versions": []}]
        self.definitions = {
            "modelfacts_user": {"properties": defined_facts if defined_facts is not None else {
                "owner": {"type": "string", "is_array": False}, "risk_tier": {"type": "integer", "is_array": False}}},
            "model_entry_user": {"properties": {}},
        }
        self.instance_id = "instance-0001"
        now = int(time.time())
        jwt = pytest.importorskip("jwt")  # PyJWT comes with the ibm extra
        self.jwt = jwt.encode({"iam_id": "IBMid-tester", "sub": "tester@example.com", "account": {"bss": "bss-0001"},
                               "iat": now, "exp": now + 3600}, "not-a-secret-only-a-test-fixture-key", algorithm="HS256")
        self.tokens: set[str] = set()  # bearer tokens issued
        self.rejected: list[dict[str, Any]] = []  # requests answered 400 / 401, with the reason
        self.fail_next: dict[str, int] = {}  # path suffix -> HTTP status to answer once
        self.stall: set[str] = set()  # path fragments never answered (until stop)
        self.released = threading.Event()
        self.lock = threading.Lock()

    def stop(self) -> None:
        self.released.set()  # stalled requests get their answer now
        super().stop()

    # -- the transport -----------------------------------------------------------------------
    def answer(self, method: str, raw_path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        record = {
            "method": method, "path": parts.path,
            "query": {k: v[0] if len(v) == 1 else v for k, v in parse_qs(parts.query).items()},
            "body": body, "original_url": headers.get("X-Original-URL"),
        }
        authorization = headers.get("Authorization", "")
        if any(fragment in parts.path for fragment in self.stall):
            self.released.wait(120)
        with self.lock:
            record["authorized"] = authorization.startswith("Bearer ") and authorization[len("Bearer "):] in self.tokens
            self.requests.append(record)
            for suffix, status in list(self.fail_next.items()):
                if parts.path.endswith(suffix):
                    del self.fail_next[suffix]
                    return status, self._error(status, "injected failure")[1], {}
            status, payload = self.route(record)
            if status in (400, 401):
                self.rejected.append({**record, "status": status, "reason": payload["errors"][0]["message"]})
        return status, payload, {}

    # -- queries for tests -------------------------------------------------------------------
    def calls(self, method: str | None = None, contains: str = "") -> list[dict[str, Any]]:
        return [r for r in self.requests if (method is None or r["method"] == method) and contains in r["path"]]

    def stubs(self) -> list[dict[str, Any]]:
        return [a for a in self.assets.values() if a["metadata"]["asset_type"] == "model_stub"]

    # -- the API -----------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
        codes = {400: "bad_request", 401: "authentication_failed", 404: "not_found", 500: "internal_error"}
        return status, {"errors": [{"code": codes.get(status, str(status)), "message": message}], "trace": uuid.uuid4().hex}

    def _invalid(self, method: str, path: str, parts: list[str], body: Any) -> str | None:
        """What is wrong with the body of a write the API documents (the first problem), else None."""
        if method == "POST" and path == "/v1/aigov/factsheet/notebook_experiments":
            experiment = body.get("notebook_experiment") if isinstance(body, dict) else None
            problem = _missing(experiment, "name", "runs", where="notebook_experiment")
            if problem:
                return problem
            for index, run in enumerate(experiment["runs"]):
                for kind in ("metrics", "params", "tags"):
                    items = run.get(kind, [])
                    if not isinstance(items, list) or not all(isinstance(i, dict) and "key" in i and "value" in i for i in items):
                        return f"notebook_experiment.runs[{index}].{kind}: a list of {{key, value}} items is required"
                if any(not isinstance(m["value"], (int, float)) for m in run.get("metrics", [])):
                    return f"notebook_experiment.runs[{index}].metrics: every value must be a number"
            return None
        if method == "PUT" and path == "/v1/aigov/model_inventory/model_stub":
            problem = _missing(body, "model_id", "name", "external_model_identifier", "external_model_provider", "catalog_id")
            if problem:
                return problem
            if body["catalog_id"] != self.catalog_id:
                return f"catalog_id: catalog {body['catalog_id']} does not exist"
            details = body.get("deployment_details")
            if details is not None:
                problem = _missing(details, "id", "name", "type", "scoring_endpoint", where="deployment_details")
                if problem or details["type"] in ("online", "batch"):
                    return problem
                return f"deployment_details.type: {details['type']!r} is not one of online, batch"
            return None
        if parts[:3] == ["v1", "aigov", "model_inventory"] and len(parts) == 6 and parts[5] == "model_entry" and method == "POST":
            return (_missing(body, "model_entry_catalog_id", "model_entry_asset_id", "version_details")
                    or _missing(body["version_details"], "approach_id", "number", where="version_details"))
        if parts[:3] == ["v1", "aigov", "model_inventory"] and len(parts) == 6 and parts[5] == "environment" and method == "PUT":
            environment = (body or {}).get("target_environment")
            return None if environment in ENVIRONMENTS else f"target_environment: {environment!r} is not one of {', '.join(ENVIRONMENTS)}"
        if len(parts) == 5 and parts[:2] == ["v2", "assets"] and parts[3] == "attributes" and method == "PATCH":
            return self._invalid_facts(parts[4], body)
        return None

    def _invalid_facts(self, asset_type: str, body: Any) -> str | None:
        """A JSON Patch of custom facts: each one defined by the catalog, with a value of its type."""
        if not isinstance(body, list) or not body:
            return "request body: a non-empty JSON Patch list is required"
        properties = (self.definitions.get(asset_type) or {}).get("properties", {})
        for index, operation in enumerate(body):
            problem = _missing(operation, "op", "path", where=f"[{index}]")
            if problem:
                return problem
            if operation["op"] not in ("add", "replace", "remove"):
                return f"[{index}].op: {operation['op']!r} is not one of add, replace, remove"
            name = operation["path"].strip("/").split("/")[0]
            if asset_type.endswith("_user") and name not in properties:
                return f"[{index}].path: {name} is not a fact defined for {asset_type}"
            if operation["op"] != "remove" and name in properties:
                expected = FACT_TYPES.get(properties[name].get("type"), object)
                value = operation.get("value")
                if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
                    return f"[{index}].value: {name} is of type {properties[name]['type']}, got {value!r}"
        return None

    def route(self, r: dict[str, Any]) -> tuple[int, Any]:
        method, path, query, body = r["method"], r["path"], r["query"], r["body"]
        parts = [p for p in path.split("/") if p]
        if method == "POST" and path == "/icp4d-api/v1/authorize":
            if not isinstance(body, dict) or not body.get("username") or body.get("api_key") != API_KEY:
                return self._error(401, "invalid credentials")
            token = f"cp4d-{uuid.uuid4().hex}"
            self.tokens.add(token)
            return 200, {"_messageCode_": "200", "message": "Success", "token": token}
        if method == "POST" and path == "/identity/introspect":  # IBM Cloud IAM: is the API key active?
            return 200, {"active": query.get("apikey") == API_KEY}
        if method == "POST" and path == "/identity/token":  # IBM Cloud IAM: API key -> access token
            form = {k: v[0] for k, v in parse_qs(body if isinstance(body, str) else "").items()}
            if form.get("apikey") != API_KEY or "apikey" not in form.get("grant_type", ""):
                return self._error(400, "invalid API key")
            self.tokens.add(self.jwt)
            return 200, {"access_token": self.jwt, "refresh_token": "not-used", "token_type": "Bearer",
                         "expires_in": 3600, "expiration": int(time.time()) + 3600}
        if not r["authorized"]:
            return self._error(401, "missing or invalid bearer token")
        problem = self._invalid(method, path, parts, body)
        if problem is not None:
            return self._error(400, problem)
        if method == "GET" and path == "/v1/aigov/factsheet/instances":
            return 200, {"resources": [{"guid": self.instance_id, "isDefaultInstance": True}]}
        if method == "GET" and path == "/v2/resource_instances":
            return 200, {"resources": [{"guid": self.instance_id, "resource_id": "2ad019f3-0fd6-4c25-966d-f3952481a870"}],
                         "next_url": None}
        if method == "GET" and path == "/v1/aigov/factsheet/heartbeat":
            return 200, {"version": "5.2.0", "status": "ok"}
        if method == "POST" and path == "/v1/aigov/factsheet/notebook_experiments":
            experiment = (body or {}).get("notebook_experiment", {})
            asset_id = uuid.uuid4().hex
            self.assets[asset_id] = {
                "metadata": {"asset_id": asset_id, "name": experiment.get("name"), "asset_type": "notebook_experiment",
                             "catalog_id": self.catalog_id},
                "entity": {"notebook_experiment": experiment},
            }
            return 201, {"metadata": {"asset_id": asset_id, "catalog_id": self.catalog_id}}
        if method == "POST" and path == "/v3/search":
            return 200, {"size": 0, "rows": [], "total_rows": 0}
        if method == "PUT" and path == "/v1/aigov/model_inventory/model_stub":
            catalog = query.get("catalog_id") or self.catalog_id
            existing = next((a for a in self.stubs() if a["entity"]["model_stub"]["model_id"] == body["model_id"]), None)
            asset_id = existing["metadata"]["asset_id"] if existing else uuid.uuid4().hex
            system = existing["entity"]["modelfacts_system"] if existing else {"model_information": {"asset_type": "model_stub"}}
            if body.get("deployment_details"):
                system["deployment_details"] = [body["deployment_details"]]
            experiment = next((a for a in self.assets.values() if a["metadata"]["asset_type"] == "notebook_experiment"
                               and a["metadata"]["name"] == query.get("experiment_name")), None)
            if experiment is not None:
                system["notebook_experiment_id"] = experiment["metadata"]["asset_id"]
            self.assets[asset_id] = {
                "metadata": {"asset_id": asset_id, "name": body["name"], "description": body.get("description"),
                             "asset_type": "model_stub", "catalog_id": catalog},
                "entity": {"model_stub": body, "modelfacts_system": system,
                           "modelfacts_user": existing["entity"]["modelfacts_user"] if existing else {}},
            }
            return 200, {"metadata": {"asset_id": asset_id, "catalog_id": catalog}, "entity": {}}
        if len(parts) >= 3 and parts[:2] == ["v2", "asset_types"] and method == "GET":
            definition = self.definitions.get(parts[2])
            return (200, definition) if definition is not None else self._error(404, f"asset type {parts[2]} not found")
        if len(parts) == 3 and parts[:2] == ["v2", "assets"]:
            asset = self.assets.get(parts[2])
            if asset is None:
                return self._error(404, f"asset {parts[2]} not found")
            if method == "GET":
                return 200, asset
            if method == "DELETE":
                del self.assets[parts[2]]
                return 204, None
        if len(parts) == 4 and parts[:2] == ["v2", "assets"] and parts[3] == "attributes" and method == "POST":
            asset = self.assets.get(parts[2])  # a new attribute (IBM Cloud copies the notebook experiment)
            if asset is None:
                return self._error(404, f"asset {parts[2]} not found")
            if body["name"] in asset["entity"]:
                return 400, {"errors": [{"code": "already_exists", "message": f"attribute {body['name']} exists"}]}
            asset["entity"][body["name"]] = body["entity"]
            return 201, {body["name"]: body["entity"]}
        if len(parts) == 5 and parts[:2] == ["v2", "assets"] and parts[3] == "attributes" and method == "PATCH":
            asset = self.assets.get(parts[2])
            if asset is None:
                return self._error(404, f"asset {parts[2]} not found")
            facts = asset["entity"].setdefault(parts[4], {})
            for op in body:  # JSON Patch "add": a key, or "/list/-" to append
                keys = op["path"].strip("/").split("/")
                if keys[-1] == "-":
                    facts.setdefault(keys[0], []).append(op["value"])
                else:
                    facts[keys[0]] = op["value"]
            return 200, facts
        if parts[:4] == ["v1", "aigov", "model_inventory", "model_usecases"] and parts[-1] == "tracked_model_versions":
            if parts[4] != self.model_entry_id:
                return self._error(404, f"AI use case {parts[4]} not found")
            return 200, {"approaches": self.approaches}
        if parts[:4] == ["v1", "aigov", "model_inventory", "models"] and len(parts) == 6:
            asset = self.assets.get(parts[4])
            if asset is None:
                return self._error(404, f"model {parts[4]} not found")
            system = asset["entity"].setdefault("modelfacts_system", {})
            if parts[5] == "model_entry" and method == "POST":
                if body.get("model_entry_asset_id") != self.model_entry_id:
                    return self._error(404, "AI use case not found")
                version = body["version_details"]
                system["modelentry_information"] = {"lmid": f"{body['model_entry_catalog_id']}:{body['model_entry_asset_id']}",
                                                    "approach_id": version["approach_id"], "version": version["number"]}
                approach = next(a for a in self.approaches if a["id"] == version["approach_id"])
                approach["versions"].insert(0, {"number": version["number"], "comment": version.get("comment", "")})
                return 200, {"asset_id": parts[4], "model_entry_asset_id": body["model_entry_asset_id"], "version": version}
            if parts[5] == "model_entry" and method == "DELETE":
                system.pop("modelentry_information", None)
                return 204, None
            if parts[5] == "environment" and method == "PUT":
                system["environment"] = body["target_environment"]
                return 200, {"asset_id": parts[4], "environment": body["target_environment"]}
        self.unhandled.append(r)
        return self._error(404, f"no route for {method} {path}")


_TRAINED: dict[str, Path] = {}


@pytest.fixture(scope="module")
def trained_use_case(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A use case trained twice on real MNIST (conftest's SMALL: 2,000 images, 1 epoch), once per
    session however many modules use it. MLflow's artifacts go under its own temp directory."""
    if "uc" not in _TRAINED:
        import os

        from conftest import SMALL, write_use_case

        from modelcycle.core.lifecycle import UseCase

        root = tmp_path_factory.mktemp("governance")
        directory = write_use_case(root / "uc", name="gov-mnist", description="governance tests", **SMALL)
        previous = os.getcwd()
        os.chdir(root)  # the tracker puts MLflow artifacts under ./mlruns
        try:
            UseCase(directory).train()
            UseCase(directory).train(force=True)
        finally:
            os.chdir(previous)
        _TRAINED["uc"] = directory
    return _TRAINED["uc"]


def open_use_case(directory: Path, database: Path, **overrides: Any) -> Any:
    """The use case with a private governance store (so tests sharing one trained use case do not
    see each other's records)."""
    from modelcycle.core.lifecycle import UseCase

    return UseCase(directory, overrides={"governance.database_url": f"sqlite:///{database}", **overrides})


@pytest.fixture
def fake_factsheets() -> Iterator[FakeFactsheets]:
    """A running fake service; shut down after the test, also on failure."""
    fake = FakeFactsheets().start()
    try:
        yield fake
    finally:
        fake.stop()


def ibm_governance(fake: FakeFactsheets) -> dict[str, Any]:
    """The ``governance:`` section pointing the IBM backend at ``fake``."""
    return {"backend": "ibm", "catalog_id": fake.catalog_id, "model_entry_id": fake.model_entry_id,
            "service_url": fake.url, "username": "admin", "api_key_env": "TEST_IBM_API_KEY", "timeout_s": 180}


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class PluginEntryPoint:
    """An EntryPoint-like object of ``group`` whose ``load()`` returns ``plugin``."""

    def __init__(self, name: str, group: str, plugin: Any) -> None:
        self.name, self.group, self.value = name, group, f"test_plugins.{name}"
        self.dist = None
        self._plugin = plugin

    def load(self) -> Any:
        return self._plugin


def install_entry_points(monkeypatch: pytest.MonkeyPatch, *fakes: PluginEntryPoint) -> None:
    """Make the plugin registry see the real entry points plus ``fakes``, as a ``pip install``
    of a package declaring them would."""
    import importlib.metadata

    from modelcycle.core import registry

    real = importlib.metadata.entry_points

    def entry_points(*, group: str) -> list[Any]:
        return [*real(group=group), *(ep for ep in fakes if ep.group == group)]

    monkeypatch.setattr(registry, "entry_points", entry_points)
