"""The monitoring stages and actions behind ``UseCase.monitor/log_payload/log_feedback/
attach_feedback/evaluate/evaluations`` and the monitoring part of ``cleanup``.

The subscription is the seed's: one per deployed endpoint, with its payload schema (printed by
``modelcycle monitor``), its monitors and the drift baseline. Payload records reach the store
through the endpoint's journal (see :mod:`.payload`); this module waits for them with the
endpoint's ``/payload/flush`` and drains journals no live endpoint holds (a killed endpoint's
records are not lost because nobody restarted it).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcycle.core.errors import StageError
from modelcycle.core.monitoring.errors import MonitoringError, ThresholdViolationError
from modelcycle.core.monitoring.store import MonitoringStore, resolve_database_url

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.state import State

__all__ = [
    "PAYLOAD_SCHEMA",
    "store_for",
    "subscribe",
    "subscription_valid",
    "log_payload",
    "log_feedback",
    "attach_feedback",
    "evaluate",
    "evaluations",
    "cleanup",
    "flush_payload",
    "forward_to_openscale",
]

#: The payload data set's schema (what the seed's OpenScale subscription prints).
PAYLOAD_SCHEMA: list[dict[str, Any]] = [
    {"name": "scoring_id", "type": "string", "nullable": False},
    {"name": "scoring_timestamp", "type": "timestamp", "nullable": False},
    {"name": "deployment_id", "type": "string", "nullable": False},
    {"name": "asset_revision", "type": "string", "nullable": True},
    {"name": "scoring_input", "type": "binary", "nullable": True},
    {"name": "prediction", "type": "integer", "nullable": True},
    {"name": "probability", "type": {"containsNull": True, "elementType": "double", "type": "array"}, "nullable": True},
    {"name": "prediction_probability", "type": "double", "nullable": True},
]

_REQUEST_IMAGES = 100  # images per scoring request of log_payload / log_feedback
_PAGE = 5000


def store_for(use_case: UseCase) -> MonitoringStore:
    """The use case's monitoring store (``monitoring.database_url``, ``MODELCYCLE_DATABASE_URL``,
    else SQLite under ``.modelcycle/``)."""
    return MonitoringStore(resolve_database_url(use_case.config.monitoring.database_url, use_case.work_dir))


# -- the endpoint ------------------------------------------------------------------------------
def _live_endpoint(use_case: UseCase) -> dict[str, Any] | None:
    endpoint = use_case.endpoint()
    return endpoint if endpoint and endpoint.get("status") == "InService" else None


def _require_endpoint(use_case: UseCase, action: str) -> dict[str, Any]:
    endpoint = use_case.endpoint()
    if endpoint is None or endpoint.get("status") != "InService":
        status = "not deployed" if endpoint is None else f"status {endpoint.get('status')}"
        raise StageError(action, f"the endpoint is {status}: run 'modelcycle deploy' first")
    return endpoint


def _endpoint_post(use_case: UseCase, endpoint: dict[str, Any], path: str, document: Any) -> tuple[int, Any]:
    """POST JSON to a local endpoint's monitoring route."""
    import orjson

    from modelcycle.platforms.local.endpoints import request

    headers = {"Content-Type": "application/json"}
    token = use_case.config.endpoint_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    status, payload, _ = request(endpoint["host"], endpoint["port"], "POST", path, body, headers, timeout=120)
    try:
        return status, orjson.loads(payload)
    except orjson.JSONDecodeError:
        return status, {"error": {"message": payload.decode(errors="replace")}}


def _error_message(document: Any) -> str:
    error = document.get("error", document) if isinstance(document, dict) else document
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)


def flush_payload(use_case: UseCase, store: MonitoringStore | None = None) -> int:
    """Bring every journaled record into the store: the live local endpoint drains its journal
    (``/payload/flush``); journals no process holds are drained here. Returns records moved."""
    from modelcycle.core.monitoring.journal import drain_orphaned_journals

    moved = 0
    endpoint = _live_endpoint(use_case)
    if endpoint is not None and endpoint.get("platform") == "local" and endpoint.get("payload_journal"):
        status, document = _endpoint_post(use_case, endpoint, "/payload/flush", {})
        if status != 200:
            raise MonitoringError(f"endpoint {endpoint['name']} could not flush its payload log ({status}): {_error_message(document)}")
        moved += int(document.get("drained", 0))
    moved += drain_orphaned_journals(use_case.work_dir / "endpoints", store or store_for(use_case))
    return moved


# -- subscription ------------------------------------------------------------------------------
def _baseline(use_case: UseCase, model_dir: Path) -> dict[str, Any]:
    """Score a fixed-seed sample of held-out test images in-process: the drift reference."""
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.monitoring.drift import make_baseline
    from modelcycle.core.serving.codecs import conform_images
    from modelcycle.core.serving.pipeline import InferencePipeline

    config = use_case.config
    pipeline = InferencePipeline(model_dir)
    test = load_dataset(config.data.dataset, config.data.path).test
    count = min(config.monitoring.drift.baseline_samples, len(test))
    index = np.sort(np.random.default_rng(0).choice(len(test), count, replace=False))
    images, labels = test.images[index], test.labels[index]
    probabilities = np.concatenate([
        pipeline.predict(conform_images(images[i:i + 500].astype(np.float32), pipeline.context.input_shape))
        for i in range(0, count, 500)
    ])
    source = {"dataset": config.data.dataset, "split": "test", "sample": "random", "seed": 0, "records": count}
    return make_baseline(probabilities, images, labels, source)


def subscribe(use_case: UseCase, state: State) -> dict[str, Any]:
    """The ``monitor`` stage: record the baseline and create the subscription (replacing any
    earlier one of this use case)."""
    deploy, train = state.stage("deploy").outputs, state.stage("train").outputs
    monitoring = use_case.config.monitoring
    store = store_for(use_case)
    if deploy.get("payload_store") and deploy["payload_store"] != store.masked_url:
        raise MonitoringError(
            f"endpoint {deploy['name']} logs its payload into {deploy['payload_store']} but this use case's "
            f"monitoring store is {store.masked_url}: deploy again with the same monitoring.database_url "
            "(modelcycle deploy --force)")
    baseline = _baseline(use_case, Path(train["model_dir"]))
    monitors = monitoring.model_dump(mode="json", exclude={"database_url", "backend", "openscale"})
    from modelcycle.core.monitoring.thresholds import effective_thresholds

    for name in ("quality", "drift"):
        monitors[name]["thresholds"] = effective_thresholds(name, getattr(monitoring, name).thresholds)
    previous = state.stage("monitor").outputs.get("openscale")
    row = store.create_subscription(
        use_case.config.name, deploy["name"], train.get("run_id"), deploy.get("url"), PAYLOAD_SCHEMA, monitors, baseline,
    )
    remote = None
    try:
        if previous:  # replaced, whichever backend is configured now
            _delete_openscale_subscription(use_case, store, previous)
        if monitoring.backend == "openscale":
            remote = _openscale_backend(monitoring.openscale).subscribe(
                use_case.config.name, deploy, train.get("run_id"), monitoring.quality)
    except BaseException:
        store.delete_subscription(row["id"])
        raise
    return {
        "subscription_id": row["id"],
        "deployment_id": deploy["name"],
        "asset_revision": train.get("run_id"),
        "store": store.masked_url,
        "payload_logging": bool(deploy.get("payload_journal")),
        "payload_schema": PAYLOAD_SCHEMA,
        "monitors": monitors,
        "baseline": {k: baseline[k] for k in ("records", "accuracy", "source") if k in baseline},
        "created_at": row["created_at"],
        **({"openscale": remote} if remote else {}),
    }


# -- the Watson OpenScale mirror ---------------------------------------------------------------
def _openscale_backend(config: Any) -> Any:
    from modelcycle.platforms.ibm.openscale import OpenScaleBackend

    return OpenScaleBackend(config)


def _delete_openscale_subscription(use_case: UseCase, store: MonitoringStore, ids: dict[str, Any]) -> int:
    """Delete an OpenScale subscription recorded in the monitor stage (1 when it existed) and
    forget which records its data sets held."""
    # the subscription lives where it was made, even if the configuration moved on since
    located = {key: ids[key] for key in ("url", "service_instance_id") if ids.get(key)}
    removed = int(_openscale_backend(use_case.config.monitoring.openscale.model_copy(update=located)).delete(ids))
    store.forget_forwarded([ids[k] for k in ("payload_data_set_id", "feedback_data_set_id") if ids.get(k)])
    return removed


def _input_shape(model_dir: str | None) -> tuple[int, ...] | None:
    from modelcycle.core.artifacts import read_manifest

    try:
        return tuple(read_manifest(Path(model_dir)).input_schema.shape) if model_dir else None
    except Exception:  # a record still goes out, flat
        return None


def forward_to_openscale(use_case: UseCase, store: MonitoringStore | None = None,
                         then: Callable[[Any, dict[str, Any]], Any] | None = None) -> dict[str, Any] | None:
    """Send OpenScale the payload and feedback records it does not hold yet; ``then(backend,
    ids)`` runs next on the same signed-in client. Returns ``{"sent": {payload, feedback},
    "then": ...}``, or None when the use case does not mirror into OpenScale."""
    if use_case.config.monitoring.backend != "openscale":
        return None
    state = use_case.store.read()
    monitor = state.stage("monitor").outputs
    ids = monitor.get("openscale")
    if not ids:
        return None
    backend = _openscale_backend(use_case.config.monitoring.openscale)
    sent = backend.forward(store or store_for(use_case), monitor["deployment_id"], ids,
                           _input_shape(state.stage("train").outputs.get("model_dir")))
    return {"sent": sent, "then": then(backend, ids) if then else None}


def subscription_valid(use_case: UseCase, outputs: dict[str, Any]) -> bool:
    """The recorded subscription is still active and follows the current deployment."""
    deploy = use_case.store.read().stage("deploy").outputs
    subscription_id = outputs.get("subscription_id")
    if not subscription_id or outputs.get("deployment_id") != deploy.get("name"):
        return False
    if use_case.config.monitoring.backend == "openscale" and not outputs.get("openscale"):
        return False  # mirrored into OpenScale since: subscribe there too
    found = store_for(use_case).subscription(subscription_id)
    return bool(found) and found["deleted_at"] is None


def _subscription(use_case: UseCase, store: MonitoringStore) -> dict[str, Any]:
    outputs = use_case.store.read().stage("monitor").outputs
    subscription = store.subscription(outputs["subscription_id"]) if outputs.get("subscription_id") else None
    if subscription is None or subscription["deleted_at"] is not None:
        raise StageError("evaluate", "no monitoring subscription: run 'modelcycle monitor' first")
    return subscription


def _deployment_id(use_case: UseCase) -> str:
    state = use_case.store.read()
    name = state.stage("monitor").outputs.get("deployment_id") or state.stage("deploy").outputs.get("name")
    if not name:
        raise StageError("log-feedback", "nothing deployed: run 'modelcycle deploy' (and 'modelcycle monitor') first")
    return str(name)


# -- payload and feedback ----------------------------------------------------------------------
def _npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(images), allow_pickle=False)
    return buffer.getvalue()


def log_payload(use_case: UseCase, samples: int = 100, dataset: str | None = None, offset: int = 0,
                images: Any = None) -> dict[str, Any]:
    """Score ``samples`` test images of ``dataset`` (from ``offset``) — or the given raw
    ``images`` — on the endpoint in requests of 100, and wait until their records are stored."""
    import orjson

    if images is None and samples <= 0:
        raise MonitoringError(f"log-payload: --samples must be positive, got {samples}")
    endpoint = _require_endpoint(use_case, "log-payload")
    name = (dataset or use_case.config.data.dataset) if images is None else None
    if images is None:
        from modelcycle.core.datasets import load_dataset

        test = load_dataset(name, use_case.config.data.path if dataset is None else None).test
        images = test.images[offset:offset + samples]
    images = np.asarray(images)
    if len(images) == 0:
        raise MonitoringError("log-payload: no images to score (check --samples and --offset)")
    started = time.perf_counter()
    scoring_ids: list[str] = []
    token = use_case.config.endpoint_token()
    for start in range(0, len(images), _REQUEST_IMAGES):
        status, payload, _ = use_case.registry.call_platform(
            endpoint["platform"], "invoke_endpoint", endpoint=endpoint, body=_npy(images[start:start + _REQUEST_IMAGES]),
            content_type="application/x-npy", accept="application/json", token=token,
        )
        document = orjson.loads(payload)
        if status != 200:
            raise MonitoringError(f"log-payload: endpoint answered {status}: {_error_message(document)}")
        scoring_ids += document.get("scoring_ids") or [document["scoring_id"]]
    store = store_for(use_case)
    flush_payload(use_case, store)
    stored = len(store.existing_scoring_ids(scoring_ids, endpoint["name"]))
    result = {
        "deployment_id": endpoint["name"], "dataset": name,
        "records": len(scoring_ids), "stored": stored, "scoring_ids": scoring_ids,
        "seconds": time.perf_counter() - started, "payload_logging": bool(endpoint.get("payload_journal")),
    }
    forwarded = forward_to_openscale(use_case, store)
    if forwarded is not None:
        result["openscale"] = forwarded["sent"]
    return result


def _image_key(pixels: bytes) -> bytes:
    return hashlib.blake2b(pixels, digest_size=16).digest()


def _known_labels(use_case: UseCase) -> dict[bytes, int]:
    """Test images of the use case's dataset by content (C×H×W bytes) → label; an image that
    appears twice with different labels is left out."""
    from modelcycle.core.datasets import load_dataset

    test = load_dataset(use_case.config.data.dataset, use_case.config.data.path).test
    images = test.images if test.images.ndim == 3 else test.images.transpose(0, 3, 1, 2)
    images = np.ascontiguousarray(images)
    table: dict[bytes, int] = {}
    for image, label in zip(images, test.labels.tolist()):
        key = _image_key(image.tobytes())
        table[key] = label if table.get(key, label) == label else -1
    return table


def log_feedback(use_case: UseCase, samples: int = 100) -> dict[str, Any]:
    """Label ``samples`` payload records: the oldest unlabelled ones whose input is a test image
    (its label is known); if there are not enough, score more labelled test images through the
    endpoint's ``/feedback`` (inline records)."""
    store = store_for(use_case)
    deployment_id = _deployment_id(use_case)
    flush_payload(use_case, store)
    known = _known_labels(use_case)
    matched: dict[str, int] = {}
    page = 0
    while len(matched) < samples:
        records = store.payload_records(deployment_id, limit=_PAGE, offset=page * _PAGE, unlabelled=True)
        for record in records:
            label = known.get(_image_key(record["scoring_input"] or b""), -1)
            if label >= 0:
                matched[record["scoring_id"]] = label
                if len(matched) == samples:
                    break
        if len(records) < _PAGE:
            break
        page += 1
    if matched:
        store.add_feedback(matched, deployment_id)
    scored = samples - len(matched)
    if scored > 0:
        _score_labelled(use_case, scored, len(matched))
    result = {
        "deployment_id": deployment_id, "feedback_records": samples, "matched_payload": len(matched),
        "scored": scored, "total_feedback": store.feedback_count(deployment_id),
    }
    forwarded = forward_to_openscale(use_case, store)
    if forwarded is not None:
        result["openscale"] = forwarded["sent"]
    return result


def _score_labelled(use_case: UseCase, count: int, matched: int) -> None:
    from modelcycle.core.datasets import load_dataset

    endpoint = _require_endpoint(use_case, "log-feedback")
    if endpoint.get("platform") != "local" or not endpoint.get("payload_journal"):
        raise MonitoringError(
            f"log-feedback: only {matched} unlabelled payload records are known test images and endpoint "
            f"{endpoint['name']} cannot score labelled records itself; run 'modelcycle log-payload' first")
    test = load_dataset(use_case.config.data.dataset, use_case.config.data.path).test.take(count)
    for start in range(0, count, _REQUEST_IMAGES):
        rows = [[image, int(label)] for image, label in
                zip(test.images[start:start + _REQUEST_IMAGES], test.labels[start:start + _REQUEST_IMAGES])]
        status, document = _endpoint_post(use_case, endpoint, "/feedback", {"fields": ["scoring_input", "label"], "values": rows})
        if status != 200:
            raise MonitoringError(f"log-feedback: endpoint answered {status}: {_error_message(document)}")


def attach_feedback(use_case: UseCase, labels: Mapping[str, int]) -> int:
    """Attach ground truth ``{scoring_id: label}`` to earlier scored records; returns the count.

    Raises:
        UnknownScoringIdError: some ids are not in the payload log (nothing is stored then).
        MonitoringError: a label is not a class index of the model.
    """
    store = store_for(use_case)
    deployment_id = _deployment_id(use_case)
    subscription = store.subscription(use_case.store.read().stage("monitor").outputs.get("subscription_id") or "")
    classes = (subscription or {}).get("baseline", {}).get("classes") if subscription else None
    clean: dict[str, int] = {}
    for scoring_id, label in labels.items():
        if isinstance(label, bool) or int(label) != label or label < 0 or (classes and label >= classes):
            raise MonitoringError(f"feedback for {scoring_id}: label {label!r} is not a class index" + (f" 0..{classes - 1}" if classes else ""))
        clean[str(scoring_id)] = int(label)
    flush_payload(use_case, store)
    stored = store.add_feedback(clean, deployment_id)
    forward_to_openscale(use_case, store)
    return stored


# -- evaluations -------------------------------------------------------------------------------
def evaluate(use_case: UseCase, fail_on_violation: bool = False, plots: bool = True) -> list[dict[str, Any]]:
    """Run every enabled monitor and store a measurement for each; optionally write plots."""
    from modelcycle.core.monitoring.evaluation import present, run_evaluation

    store = store_for(use_case)
    subscription = _subscription(use_case, store)
    flush_payload(use_case, store)
    remote: dict[str, Any] = {}
    if use_case.config.monitoring.quality.enabled:
        mirrored = forward_to_openscale(use_case, store, then=lambda backend, ids: backend.run_quality(ids))
        if mirrored is not None:
            remote["quality"] = {"openscale": mirrored["then"]}
    results = run_evaluation(store, subscription, use_case.config.monitoring, remote)
    if plots:
        from modelcycle.core.monitoring.plots import write_plots

        history = [present(m) for m in store.measurements(subscription["id"])]
        paths = write_plots(results, history, use_case.work_dir / "plots")
        for result in results:
            result["plots"] = paths
    if fail_on_violation and any(r["violations"] for r in results):
        raise ThresholdViolationError(results)
    return results


def evaluations(use_case: UseCase, limit: int | None = None) -> list[dict[str, Any]]:
    """Stored measurements of the use case (every subscription it had), oldest first."""
    from modelcycle.core.monitoring.evaluation import present

    return [present(m) for m in store_for(use_case).measurements(use_case=use_case.config.name, limit=limit)]


def cleanup(use_case: UseCase, records: bool = False) -> dict[str, int]:
    """Delete the subscription (``{"monitoring": 1}``) after draining what the stopped endpoint
    journaled; with ``records`` also its payload, feedback and measurements and the journal.
    Called by ``UseCase.cleanup`` once the endpoint is stopped."""
    state = use_case.store.read()
    subscription_id = state.stage("monitor").outputs.get("subscription_id")
    deployment_id = state.stage("monitor").outputs.get("deployment_id") or state.stage("deploy").outputs.get("name")
    if not subscription_id and not records:
        return {}
    if not deployment_id:
        return {}
    store = store_for(use_case)
    removed: dict[str, int] = {}
    remote = state.stage("monitor").outputs.get("openscale")
    if remote:  # first: a failure leaves the local subscription and the state as they were
        removed["openscale"] = _delete_openscale_subscription(use_case, store, remote)
    if subscription_id and store.delete_subscription(subscription_id):
        removed["monitoring"] = 1
    if records:
        journal = use_case.work_dir / "endpoints" / f"{deployment_id}.journal"
        shutil.rmtree(journal, ignore_errors=True)
        removed.update(store.delete_records(deployment_id, subscription_id))
    else:
        from modelcycle.core.monitoring.journal import drain_orphaned_journals

        drain_orphaned_journals(use_case.work_dir / "endpoints", store)
    return removed
