"""A Watson OpenScale stand-in on loopback that answers the REST calls of ``ibm-watson-openscale``
and records every request.

It keeps what the real service keeps for the calls modelcycle makes — IAM tokens, entitlements,
data marts, service providers, subscriptions (with their payload and feedback data sets), data
set records, monitor definitions, monitor instances, runs and measurements — as plain JSON
resources (``{"metadata": {...}, "entity": {...}}``). A quality run computes the multiclass
metrics from the feedback records stored so far (prediction vs label), the way the service does.
Nothing here is modelcycle code: it only knows the REST API.

Like the service it says no:

* every call but the IAM token exchange needs ``Authorization: Bearer <a token this stand-in
  issued>``; anything else is answered 401 in the service's error shape
  (``{"trace": ..., "errors": [{"code", "message"}]}``);
* request bodies are checked against the documented schemas (the required properties of the v2
  API models ``ibm-watson-openscale`` 3.x declares, ``PayloadRecord``, the feedback table's label
  and prediction columns named by the subscription's ``asset_properties``): a bad one is answered
  400 naming the property, and listed in ``rejected``;
* ``create_outcome[collection]`` makes the next subscriptions / monitor instances created end
  ``"error"`` or stay ``"preparing"``; ``run_outcome`` makes monitor runs end ``"error"`` or stay
  ``"running"``.

    with FakeOpenScale() as fake:
        fake.url, fake.instance_id, fake.requests, fake.rejected
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback_service import LoopbackJSONService, missing_property as _missing

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
THRESHOLD_TYPES = ("lower_limit", "upper_limit")
SERVICE_TYPES = ("watson_machine_learning", "amazon_sagemaker", "azure_machine_learning", "custom_machine_learning",
                 "spss_collaboration_and_deployment_services", "azure_machine_learning_service")
PROBLEM_TYPES = ("binary", "multiclass", "regression")
INPUT_DATA_TYPES = ("structured", "unstructured_image", "unstructured_text", "unstructured_audio", "unstructured_video")
FINAL_FAILURE = {"trace": "0" * 32, "errors": [{"code": "AIQCS0500E", "message": "the service could not finish the operation (injected)"}]}


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
        self.tokens: set[str] = set()  # the IAM access tokens issued
        self.rejected: list[tuple[str, str, int, str]] = []  # (method, path, status, message) refused
        self.create_outcome: dict[str, str] = {}  # collection -> "error" | "preparing" for what is created next
        self.run_outcome: str | None = None  # "error" | "running": how the next monitor runs end
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
                    return status, _error("AIQCS0000E", "injected failure"), {}
            if path == "/identity/token":
                return self._token(method, body)
            token = headers.get("Authorization", "")
            if not token.startswith("Bearer ") or token[len("Bearer "):] not in self.tokens:
                return self._refuse(method, path, 401, "AIQHS0401E",
                                    "the request is not authorized: missing, unknown or expired bearer token")
            if path == "/v1/entitlements":
                return 200, {"entitlements": {"ai_openscale": [{"id": self.instance_id, "plan_name": "standard"}]}}, {}
            prefix = f"/openscale/{self.instance_id}/v2/"
            if not path.startswith(prefix):
                return 404, _error("AIQHS0404E", f"unknown path {path}"), {}
            segments = path[len(prefix):].strip("/").split("/")
            problem = self._invalid(method, segments, body) if method in ("POST", "PUT", "PATCH") else None
            if problem is not None:
                return self._refuse(method, path, 400, "AIQCS0400E", problem)
            return self._v2(method, segments, query, body)

    def _token(self, method: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """IBM Cloud IAM: ``grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=...`` (a form)
        for an access token; a wrong key gets IAM's 400 shape."""
        form = {k: v[0] for k, v in parse_qs(body if isinstance(body, str) else "").items()}
        if method != "POST" or form.get("grant_type") != "urn:ibm:params:oauth:grant-type:apikey":
            return 400, {"errorCode": "BXNIM0109E", "errorMessage": "Property missing or empty.",
                         "context": {"requestId": uuid.uuid4().hex}}, {}
        if form.get("apikey") != API_KEY:
            return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.",
                         "context": {"requestId": uuid.uuid4().hex}}, {}
        token = _fake_jwt()
        self.tokens.add(token)
        return 200, {"access_token": token, "refresh_token": "r", "token_type": "Bearer",
                     "expires_in": 3600, "expiration": int(time.time()) + 3600}, {}

    def _refuse(self, method: str, path: str, status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
        self.rejected.append((method, path, status, message))
        return status, _error(code, message), {}

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
                answer["entity"].get("status", {}).pop("outcome", None)
                status = resource["entity"].get("status", {})
                if status.get("state") == "preparing":  # active from the next poll on, unless told otherwise
                    outcome = status.get("outcome", "active")
                    if outcome == "error":
                        resource["entity"]["status"] = {"state": "error", "failure": FINAL_FAILURE}
                    elif outcome != "preparing":
                        status["state"] = "active"
                return 200, answer, {}
            if method == "DELETE":
                del items[segments[1]]
                if collection == "subscriptions":  # the service drops the subscription's data sets and monitors
                    for key, data_set in list(self.resources["data_sets"].items()):
                        if data_set["entity"]["target"]["target_id"] == segments[1]:
                            del self.resources["data_sets"][key]
                            self.records.pop(key, None)
                    for key, monitor in list(self.resources["monitor_instances"].items()):
                        if monitor["entity"]["target"]["target_id"] == segments[1]:
                            del self.resources["monitor_instances"][key]
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
        outcome = self.create_outcome.get(collection)
        if outcome is not None:  # stays preparing for ever, or ends in error at the first poll
            entity["status"] = {"state": "preparing", "outcome": outcome}
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
        if self.run_outcome == "error":
            state, failure = "error", FINAL_FAILURE
        elif len(rows) < minimum:
            state, failure = "error", _error("AIQQM0001E", f"{len(rows)} feedback records, {minimum} needed")
        else:
            metrics = [{"id": name, "value": value} for name, value in _quality_metrics(rows).items()]
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
        if self.run_outcome == "running":  # never finishes
            run["entity"]["status"] = {"state": "running", "queued_at": _now(), "started_at": _now()}
        self.resources["runs"][run_id] = run
        return {**run, "entity": {**run["entity"], "status": {"state": "running", "queued_at": _now()}}}  # answered before it ran

    # -- request bodies ------------------------------------------------------------------------
    def _invalid(self, method: str, segments: list[str], body: Any) -> str | None:
        """What is wrong with a create / store body (the first problem), else None."""
        collection = segments[0]
        if method == "POST" and collection == "data_sets" and len(segments) == 3 and segments[2] == "records":
            data_set = self.resources["data_sets"].get(segments[1])
            return None if data_set is None else self._invalid_records(data_set, body)  # unknown: 404 later
        if method != "POST" or len(segments) != 1:
            return None
        if collection == "service_providers":
            return (_missing(body, "name", "service_type", "credentials")
                    or _one_of(body.get("service_type"), SERVICE_TYPES, "service_type"))
        if collection == "subscriptions":
            return self._invalid_subscription(body)
        if collection == "monitor_instances":
            return self._invalid_monitor_instance(body)
        return None

    def _invalid_subscription(self, body: Any) -> str | None:
        problem = _missing(body, "data_mart_id", "service_provider_id", "asset", "deployment")
        if problem:
            return problem
        if body["data_mart_id"] not in self.resources["data_marts"]:
            return f"data_mart_id: data mart {body['data_mart_id']} does not exist"
        if body["service_provider_id"] not in self.resources["service_providers"]:
            return f"service_provider_id: service provider {body['service_provider_id']} does not exist"
        asset, deployment = body["asset"], body["deployment"]
        problem = (_missing(asset, "asset_id", "asset_type", where="asset")
                   or _missing(deployment, "deployment_id", "name", "deployment_type", where="deployment")
                   or _one_of(asset.get("problem_type"), PROBLEM_TYPES, "asset.problem_type", optional=True)
                   or _one_of(asset.get("input_data_type"), INPUT_DATA_TYPES, "asset.input_data_type", optional=True))
        if problem:
            return problem
        properties = body.get("asset_properties") or {}
        if not isinstance(properties, dict):
            return "asset_properties: must be an object"
        for key in ("label_column", "prediction_field"):
            if key in properties and not (isinstance(properties[key], str) and properties[key]):
                return f"asset_properties.{key}: must be a non-empty string"
        fields = properties.get("probability_fields", [])
        if not (isinstance(fields, list) and all(isinstance(f, str) and f for f in fields)):
            return "asset_properties.probability_fields: must be a list of column names"
        return None

    def _invalid_monitor_instance(self, body: Any) -> str | None:
        problem = _missing(body, "data_mart_id", "monitor_definition_id", "target")
        if problem:
            return problem
        if body["data_mart_id"] not in self.resources["data_marts"]:
            return f"data_mart_id: data mart {body['data_mart_id']} does not exist"
        metrics = MONITOR_DEFINITIONS.get(body["monitor_definition_id"])
        if metrics is None:
            return f"monitor_definition_id: no monitor definition {body['monitor_definition_id']}"
        target = body["target"]
        problem = _missing(target, "target_type", "target_id", where="target")
        if problem:
            return problem
        if target["target_type"] == "subscription" and target["target_id"] not in self.resources["subscriptions"]:
            return f"target.target_id: subscription {target['target_id']} does not exist"
        for index, threshold in enumerate(body.get("thresholds") or []):
            where = f"thresholds[{index}]"
            problem = (_missing(threshold, "metric_id", "type", where=where)
                       or _one_of(threshold["type"], THRESHOLD_TYPES, f"{where}.type"))
            if problem:
                return problem
            if threshold["metric_id"] not in metrics:
                return f"{where}.metric_id: {threshold['metric_id']} is not a metric of {body['monitor_definition_id']}"
            if not _number(threshold.get("value")):
                return f"{where}.value: a number is required"
        parameters = body.get("parameters") or {}
        size = parameters.get("min_feedback_data_size")
        if body["monitor_definition_id"] == "quality" and size is not None and not (isinstance(size, int) and size >= 0):
            return f"parameters.min_feedback_data_size: a non-negative integer is required, got {size!r}"
        return None

    def _invalid_records(self, data_set: dict[str, Any], body: Any) -> str | None:
        """Payload records are ``PayloadRecord`` documents; feedback records are tables whose
        columns include the subscription's label column and prediction field."""
        records = body if isinstance(body, list) else [body]
        if not records or not all(isinstance(r, dict) for r in records):
            return "request body: a non-empty list of records is required"
        subscription = self.resources["subscriptions"].get(data_set["entity"]["target"]["target_id"], {})
        properties = subscription.get("entity", {}).get("asset_properties") or {}
        prediction = properties.get("prediction_field", "prediction")
        if data_set["entity"]["type"] == "payload_logging":
            outputs = [prediction, *properties.get("probability_fields", [])]
            for index, record in enumerate(records):
                problem = (_missing(record, "request", "response", "scoring_id", "scoring_timestamp", where=f"[{index}]")
                           or _table(record["request"], f"[{index}].request")
                           or _table(record["response"], f"[{index}].response", required=outputs))
                if problem:
                    return problem
                if not _timestamp(record["scoring_timestamp"]):
                    return f"[{index}].scoring_timestamp: an ISO 8601 timestamp is required, got {record['scoring_timestamp']!r}"
                if "response_time" in record and not (isinstance(record["response_time"], int) and record["response_time"] >= 0):
                    return f"[{index}].response_time: a non-negative integer (ms) is required"
            return None
        label = properties.get("label_column")
        if not label:
            return "the subscription has no asset_properties.label_column: feedback cannot be stored"
        for index, record in enumerate(records):
            problem = _table(record, f"[{index}]", required=[label, prediction])
            if problem:
                return problem
            column = record["fields"].index(label)
            if any(row[column] is None for row in record["values"]):
                return f"[{index}].values: the label column {label} must not be null"
        return None


def _error(code: str, message: str) -> dict[str, Any]:
    """The service's error document."""
    return {"trace": uuid.uuid4().hex, "errors": [{"code": code, "message": message}]}


def _one_of(value: Any, allowed: tuple[str, ...], where: str, optional: bool = False) -> str | None:
    if (value is None and optional) or value in allowed:
        return None
    return f"{where}: {value!r} is not one of {', '.join(allowed)}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _timestamp(value: Any) -> bool:
    from datetime import datetime

    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _table(document: Any, where: str, required: list[str] | tuple[str, ...] = ()) -> str | None:
    """``{"fields": [names], "values": [[one value per field], ...]}`` with the ``required`` columns."""
    problem = _missing(document, "fields", "values", where=where)
    if problem:
        return problem
    fields, values = document["fields"], document["values"]
    if not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
        return f"{where}.fields: a list of column names is required"
    for name in required:
        if name not in fields:
            return f"{where}.fields: the column {name} is required"
    if not isinstance(values, list) or not all(isinstance(row, list) and len(row) == len(fields) for row in values):
        return f"{where}.values: every row needs one value per field ({len(fields)})"
    return None


def _quality_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy and the support-weighted precision, recall and F1 of ``rows`` (prediction vs label)."""
    if not rows:
        return {"accuracy": 0.0}
    pairs = [(int(row["label"]), int(row["prediction"])) for row in rows]
    n = len(pairs)
    classes = sorted({label for label, _ in pairs} | {prediction for _, prediction in pairs})
    precision = recall = f1 = 0.0
    for c in classes:
        tp = sum(1 for label, prediction in pairs if label == c and prediction == c)
        predicted = sum(1 for _, prediction in pairs if prediction == c)
        support = sum(1 for label, _ in pairs if label == c)
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        precision += support / n * p
        recall += support / n * r
        f1 += support / n * (2 * p * r / (p + r) if p + r else 0.0)
    accuracy = sum(1 for label, prediction in pairs if label == prediction) / n
    return {"accuracy": accuracy, "weighted_precision": precision, "weighted_recall": recall,
            "weighted_f_measure": f1, "weighted_true_positive_rate": recall}


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
    claims = {"iat": now, "exp": now + 3600, "sub": "fake", "jti": uuid.uuid4().hex}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"
