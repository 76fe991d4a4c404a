"""A Watson OpenScale stand-in on loopback that answers the REST calls of ``ibm-watson-openscale``
and records every request.

It keeps what the real service keeps for the calls modelcycle makes — IAM tokens, entitlements,
data marts, service providers, subscriptions (with their payload and feedback data sets), data
set records, monitor definitions, monitor instances, runs and measurements — as plain JSON
resources (``{"metadata": {...}, "entity": {...}}``). A quality run computes the multiclass
metrics from the feedback records stored so far (prediction vs label), the way the service does,
so a test can compare them with modelcycle's own evaluation. Nothing here is modelcycle code: it
only knows the REST API.

    with FakeOpenScale() as fake:
        fake.url, fake.instance_id, fake.requests
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback_service import LoopbackJSONService

MONITOR_DEFINITIONS = {
    "quality": ["accuracy", "weighted_true_positive_rate", "weighted_false_positive_rate", "weighted_recall",
                "weighted_precision", "weighted_f_measure", "log_loss"],
    "performance": ["records", "response_time"],
    "drift": ["drift_magnitude", "predicted_accuracy", "data_drift_magnitude"],
    "fairness": ["fairness_value"],
    "explainability": ["global_explanation_stability"],
    "model_health": ["payload_count"],
}
API_KEY = "fake-openscale-api-key"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class FakeOpenScale(LoopbackJSONService):
    """The service: ``start()`` / ``stop()`` (or a ``with`` block) a threaded HTTP server on
    127.0.0.1. ``requests`` lists ``(method, path, body)`` in arrival order."""

    name = "fake-openscale"

    def __init__(self) -> None:
        super().__init__()
        self.instance_id = str(uuid.uuid4())
        self.requests: list[tuple[str, str, Any]] = []
        self.resources: dict[str, dict[str, dict[str, Any]]] = {
            "data_marts": {}, "service_providers": {}, "subscriptions": {}, "data_sets": {},
            "monitor_instances": {}, "runs": {}, "measurements": {},
        }
        self.records: dict[str, list[dict[str, Any]]] = {}  # data set id -> stored records
        self.pending: dict[str, int] = {}  # store-records request id -> status polls so far
        self.fail_next: dict[str, int] = {}  # path fragment -> HTTP status to answer once
        self.lock = threading.Lock()

    # -- queries for tests ---------------------------------------------------------------------
    def calls(self, method: str, fragment: str) -> list[Any]:
        """Bodies of the recorded ``method`` requests whose path contains ``fragment``."""
        return [body for m, path, body in self.requests if m == method and fragment in path]

    def data_set(self, subscription_id: str, kind: str) -> dict[str, Any]:
        for data_set in self.resources["data_sets"].values():
            target = data_set["entity"]["target"]
            if target["target_id"] == subscription_id and data_set["entity"]["type"] == kind:
                return data_set
        raise KeyError(f"no {kind} data set for subscription {subscription_id}")

    # -- the API -------------------------------------------------------------------------------
    def answer(self, method: str, raw_path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            self.requests.append((method, path, body))
            for fragment, status in list(self.fail_next.items()):
                if fragment in path:
                    del self.fail_next[fragment]
                    return status, {"errors": [{"code": "AIQCS0000E", "message": "injected failure"}]}, {}
            if path == "/identity/token":
                if f"apikey={API_KEY}" not in str(body):
                    return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found."}, {}
                return 200, {"access_token": _fake_jwt(), "refresh_token": "r", "token_type": "Bearer",
                             "expires_in": 3600, "expiration": int(time.time()) + 3600}, {}
            if not headers.get("Authorization", "").startswith("Bearer "):
                return 401, {"errors": [{"code": "AIQHS0001E", "message": "missing bearer token"}]}, {}
            if path == "/v1/entitlements":
                return 200, {"entitlements": {"ai_openscale": [{"id": self.instance_id, "plan_name": "standard"}]}}, {}
            prefix = f"/openscale/{self.instance_id}/v2/"
            if not path.startswith(prefix):
                return 404, {"errors": [{"code": "AIQHS0404E", "message": f"unknown path {path}"}]}, {}
            return self._v2(method, path[len(prefix):].strip("/").split("/"), query, body)

    def _v2(self, method: str, segments: list[str], query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        collection = segments[0]
        if collection == "monitor_definitions":
            return 200, {"monitor_definitions": [_definition(name, metrics) for name, metrics in MONITOR_DEFINITIONS.items()]}, {}
        if collection == "data_sets" and len(segments) >= 3 and segments[2] == "records":
            return self._records(method, segments[1], body)
        if collection == "data_sets" and len(segments) == 4 and segments[2] == "requests":
            # like the service, a stored request is pending for a while before it is active
            polls = self.pending.get(segments[3])
            if polls is None:
                return 404, {"errors": [{"code": "AIQHS0404E", "message": f"request {segments[3]} not found"}]}, {}
            self.pending[segments[3]] = polls + 1
            return 200, {"state": "active" if polls else "pending"}, {}
        if collection == "monitor_instances" and len(segments) >= 3:
            return self._monitor_instance_child(method, segments, query, body)
        if collection == "measurements" and method == "GET":
            found = [m for m in self.resources["measurements"].values()
                     if m["entity"]["monitor_instance_id"] == query.get("monitor_instance_id", m["entity"]["monitor_instance_id"])]
            return 200, {"measurements": found}, {}
        if collection not in self.resources:
            return 404, {"errors": [{"code": "AIQHS0404E", "message": f"unknown collection {collection}"}]}, {}
        items = self.resources[collection]
        if len(segments) == 1:
            if method == "POST":
                return 202 if collection == "subscriptions" else 201, self._create(collection, body), {}
            if method == "GET":
                found = [r for r in items.values() if _matches(r, query)]
                return 200, {collection: found}, {}
        elif len(segments) == 2:
            resource = items.get(segments[1])
            if resource is None:
                return 404, {"errors": [{"code": "AIQHS0404E", "message": f"{collection} {segments[1]} not found"}]}, {}
            if method == "GET":
                answer = json.loads(json.dumps(resource))
                if resource["entity"].get("status", {}).get("state") == "preparing":  # active from the next poll on
                    resource["entity"]["status"]["state"] = "active"
                return 200, answer, {}
            if method == "DELETE":
                del items[segments[1]]
                if collection == "subscriptions":  # the service drops the subscription's data sets
                    for key, data_set in list(self.resources["data_sets"].items()):
                        if data_set["entity"]["target"]["target_id"] == segments[1]:
                            del self.resources["data_sets"][key]
                            self.records.pop(key, None)
                return 202, None, {}
            if method == "PATCH":
                for operation in body or []:
                    _patch(resource, operation)
                return 200, resource, {}
        return 405, {"errors": [{"code": "AIQHS0405E", "message": f"{method} /{'/'.join(segments)}"}]}, {}

    def _create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        resource_id = str(uuid.uuid4())
        entity = dict(body)
        entity["status"] = {"state": "preparing" if collection in ("subscriptions", "monitor_instances") else "active"}
        if collection == "service_providers":  # the service keeps credentials in its vault
            entity.setdefault("operational_space_id", "production")
            entity["credentials"] = {"secret_id": str(uuid.uuid4())}
        resource = {"metadata": {"id": resource_id, "crn": f"crn:fake:{resource_id}", "url": f"/v2/{collection}/{resource_id}",
                                 "created_at": _now(), "created_by": "fake"}, "entity": entity}
        self.resources[collection][resource_id] = resource
        if collection == "subscriptions":
            for kind in ("payload_logging", "feedback"):
                self._create("data_sets", {
                    "data_mart_id": body["data_mart_id"], "name": f"{kind} data set", "type": kind,
                    "target": {"target_id": resource_id, "target_type": "subscription"},
                    "data_schema": {"type": "struct", "fields": []},
                })
        return resource

    def _records(self, method: str, data_set_id: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if data_set_id not in self.resources["data_sets"]:
            return 404, {"errors": [{"code": "AIQHS0404E", "message": f"data set {data_set_id} not found"}]}, {}
        stored = self.records.setdefault(data_set_id, [])
        if method == "POST":
            request_id = str(uuid.uuid4())
            self.pending[request_id] = 0
            stored.extend(body if isinstance(body, list) else [body])
            location = f"/v2/data_sets/{data_set_id}/requests/{request_id}"
            return 202, {"state": "pending"}, {"Location": location}
        return 200, {"records": stored}, {}

    def _monitor_instance_child(self, method: str, segments: list[str], query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        instance = self.resources["monitor_instances"].get(segments[1])
        if instance is None:
            return 404, {"errors": [{"code": "AIQHS0404E", "message": f"monitor instance {segments[1]} not found"}]}, {}
        if segments[2] == "runs":
            if method == "POST":
                run = self._run(instance, body or {})
                return 201, run, {}
            if len(segments) == 4:
                run = self.resources["runs"].get(segments[3])
                if run is None:
                    return 404, {"errors": [{"code": "AIQHS0404E", "message": "run not found"}]}, {}
                return 200, run, {}
            runs = [r for r in self.resources["runs"].values() if r["entity"]["monitor_instance_id"] == segments[1]]
            return 200, {"runs": runs}, {}
        if segments[2] == "measurements":
            found = [m for m in self.resources["measurements"].values() if m["entity"]["monitor_instance_id"] == segments[1]
                     and m["entity"]["run_id"] == query.get("run_id", m["entity"]["run_id"])]
            if len(segments) == 4:
                match = self.resources["measurements"].get(segments[3])
                return (200, match, {}) if match else (404, {"errors": [{"code": "AIQHS0404E", "message": "no measurement"}]}, {})
            return 200, {"measurements": found}, {}
        return 405, {"errors": [{"code": "AIQHS0405E", "message": "unsupported"}]}, {}

    def _run(self, instance: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """A quality run: the multiclass metrics over the subscription's feedback records."""
        run_id = str(uuid.uuid4())
        subscription_id = instance["entity"]["target"]["target_id"]
        state, failure, values = "finished", None, []
        try:
            feedback = self.data_set(subscription_id, "feedback")
            rows = _rows(self.records.get(feedback["metadata"]["id"], []))
        except KeyError:
            rows = []
        minimum = int(instance["entity"].get("parameters", {}).get("min_feedback_data_size", 0))
        if len(rows) < minimum:
            state, failure = "error", {"errors": [{"code": "AIQQM0001E", "message":
                                                   f"{len(rows)} feedback records, {minimum} needed"}]}
        else:
            correct = sum(1 for row in rows if int(row["prediction"]) == int(row["label"]))
            accuracy = correct / len(rows) if rows else 0.0
            metrics = [{"id": "accuracy", "value": accuracy}]
            for threshold in instance["entity"].get("thresholds", []):
                for metric in metrics:
                    if metric["id"] == threshold["metric_id"]:
                        metric[threshold["type"]] = threshold["value"]
            issues = sum(1 for m in metrics if ("lower_limit" in m and m["value"] < m["lower_limit"])
                         or ("upper_limit" in m and m["value"] > m["upper_limit"]))
            values = [{"metrics": metrics, "tags": []}]
            measurement_id = str(uuid.uuid4())
            self.resources["measurements"][measurement_id] = {
                "metadata": {"id": measurement_id, "url": f"/v2/monitor_instances/{instance['metadata']['id']}/measurements/{measurement_id}",
                             "created_at": _now()},
                "entity": {"monitor_instance_id": instance["metadata"]["id"], "monitor_definition_id": "quality",
                           "run_id": run_id, "timestamp": _now(), "issue_count": issues, "values": values,
                           "sources": [], "target": instance["entity"]["target"], "records": len(rows)},
            }
        run = {
            "metadata": {"id": run_id, "url": f"/v2/monitor_instances/{instance['metadata']['id']}/runs/{run_id}",
                         "created_at": _now()},
            "entity": {"monitor_instance_id": instance["metadata"]["id"], "triggered_by": body.get("triggered_by", "user"),
                       "parameters": body.get("parameters", {}),
                       "status": {"state": state, "queued_at": _now(), "started_at": _now(), "completed_at": _now(),
                                  **({"failure": failure} if failure else {})}},
        }
        self.resources["runs"][run_id] = run
        return {**run, "entity": {**run["entity"], "status": {"state": "running", "queued_at": _now()}}}  # answered before it ran


def _rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feedback records (``{"fields": [...], "values": [[...], ...]}`` bodies) as dicts."""
    rows = []
    for record in records:
        fields = record.get("fields", [])
        for values in record.get("values", []):
            rows.append(dict(zip(fields, values)))
    return rows


def _matches(resource: dict[str, Any], query: dict[str, str]) -> bool:
    entity = resource["entity"]
    for key, value in query.items():
        if key in ("target.target_id", "target_target_id"):
            if entity.get("target", {}).get("target_id") != value:
                return False
        elif key in ("type", "data_mart_id", "service_provider_id", "monitor_definition_id", "name"):
            if entity.get(key) is not None and str(entity.get(key)) != value:
                return False
    return True


def _patch(resource: dict[str, Any], operation: dict[str, Any]) -> None:
    keys = [k for k in operation["path"].split("/") if k]
    node = resource["entity"]
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if operation["op"] == "remove":
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = operation["value"]


def _definition(name: str, metrics: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"id": name, "url": f"/v2/monitor_definitions/{name}", "created_at": _now()},
        "entity": {"name": name.replace("_", " ").title(), "metrics": [
            {"id": metric, "name": metric.replace("_", " "), "thresholds": [{"type": "lower_limit", "default": 0.8}],
             "expected_direction": "increasing"} for metric in metrics], "tags": []},
    }


def _fake_jwt() -> str:
    import base64

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'iat': now, 'exp': now + 3600, 'sub': 'fake'})}.c2ln"
