"""The monitoring stages and actions behind ``UseCase.monitor/log_payload/log_feedback/
attach_feedback/evaluate/evaluations`` and the monitoring part of ``UseCase.cleanup``.

The subscription is the seed's: one per deployed endpoint, with its payload schema (printed by
``modelcycle monitor``), its monitors and the drift baseline. Payload records reach the store
through the serving platform: this module asks it for them with the platform hook
``flush_payload`` before reading records, and for labelled records it cannot find among the
logged ones with ``send_feedback``. It never knows an endpoint's internals.

The monitoring backend (``monitoring.backend``, see :mod:`.backends`) mirrors the subscription,
the records and the quality runs elsewhere; each command opens it once.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcycle.core.errors import EndpointError, StageError
from modelcycle.core.monitoring.backends import Mirror, open_mirror
from modelcycle.core.monitoring.errors import MonitoringError, ThresholdViolationError
from modelcycle.core.monitoring.records import PAYLOAD_SCHEMA, payload_schema
from modelcycle.core.monitoring.store import MonitoringStore, resolve_database_url
from modelcycle.core.plugin_types import SERVING_STATUSES

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.state import State
    from modelcycle.core.view import UseCaseView

__all__ = [
    "PAYLOAD_SCHEMA",
    "store_for",
    "open_mirror",
    "subscribe",
    "subscription_valid",
    "log_payload",
    "log_feedback",
    "attach_feedback",
    "evaluate",
    "evaluations",
    "cleanup",
    "flush_payload",
    "forward",
]

_REQUEST_IMAGES = 100  # images per scoring request of log_payload / log_feedback
_PAGE = 5000


def store_for(use_case: UseCaseView) -> MonitoringStore:
    """The use case's monitoring store (``monitoring.database_url``, ``MODELCYCLE_DATABASE_URL``,
    else SQLite under ``.modelcycle/``)."""
    return MonitoringStore(resolve_database_url(use_case.config.monitoring.database_url, use_case.work_dir))


# -- the endpoint and its platform -------------------------------------------------------------
def _live_endpoint(use_case: UseCaseView) -> dict[str, Any] | None:
    endpoint = use_case.endpoint()
    return endpoint if endpoint and endpoint.get("status") in SERVING_STATUSES else None


def _require_endpoint(use_case: UseCaseView, action: str) -> dict[str, Any]:
    endpoint = use_case.endpoint()
    if endpoint is None or endpoint.get("status") not in SERVING_STATUSES:
        status = "not deployed" if endpoint is None else f"status {endpoint.get('status')}"
        raise StageError(action, f"the endpoint is {status}: run 'modelcycle deploy' first")
    return endpoint


def _platform(use_case: UseCaseView, endpoint: Mapping[str, Any] | None, hook: str) -> str | None:
    """The serving platform of ``endpoint`` (else of the recorded deployment, else the configured
    one), loaded; ``None`` when it does not implement ``hook``."""
    if endpoint is None:
        endpoint = use_case.store.read().stage("deploy").outputs
    name = endpoint.get("platform") or use_case.config.serving.platform
    registry = use_case.registry
    plugin = registry.load_platform(name, "serving")
    implemented = any(impl.plugin is plugin for impl in getattr(registry.pm.hook, hook).get_hookimpls())
    return name if implemented else None


def flush_payload(use_case: UseCaseView, store: MonitoringStore | None = None) -> int:
    """Bring every payload record the serving platform logged into the store (platform hook
    ``flush_payload``): the live endpoint's, and whatever a stopped endpoint left behind.
    Returns the records moved (0 for a platform that logs no payload)."""
    endpoint = _live_endpoint(use_case)
    platform = _platform(use_case, endpoint, "flush_payload")
    if platform is None:
        return 0
    return int(use_case.registry.call_platform(
        platform, "flush_payload", endpoint=endpoint, store=store or store_for(use_case), work_dir=use_case.work_dir,
        token=use_case.config.endpoint_token()))


# -- subscription ------------------------------------------------------------------------------
def _baseline(use_case: UseCaseView, model_dir: Path) -> dict[str, Any]:
    """Score a fixed-seed sample of held-out test records in-process: the drift reference
    (for tabular records it keeps the sample per feature)."""
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.monitoring.drift import make_baseline
    from modelcycle.core.serving.codecs import conform_input
    from modelcycle.core.serving.pipeline import load_pipeline

    config = use_case.config
    pipeline = load_pipeline(model_dir)  # a script-mode model: through the user's handlers
    test = load_dataset(config.data.dataset, settings=config.data).test
    count = min(config.monitoring.drift.baseline_samples, len(test))
    index = np.sort(np.random.default_rng(0).choice(len(test), count, replace=False))
    images, labels = test.images[index], test.labels[index]
    schema = pipeline.context.schema
    probabilities = np.concatenate([
        pipeline.predict(conform_input(images[i:i + 500].astype(np.float32), schema))
        for i in range(0, count, 500)
    ])
    source = {"dataset": config.data.dataset, "split": "test", "sample": "random", "seed": 0, "records": count}
    return make_baseline(probabilities, images, labels, source, fields=schema.fields if pipeline.context.tabular else None)


def subscribe(use_case: UseCaseView, state: State, mirror: Mirror) -> dict[str, Any]:
    """The ``monitor`` stage: record the baseline and create the subscription, locally and in
    ``mirror`` (replacing any earlier one of this use case, whichever backend made it).

    The outputs keep ``backend`` (the mirror's name) and, when it made something, the ids its
    ``subscribe`` returned under that name."""
    deploy, train = state.stage("deploy").outputs, state.stage("train").outputs
    monitoring = use_case.config.monitoring
    store = store_for(use_case)
    if deploy.get("payload_store") and deploy["payload_store"] != store.masked_url:
        raise MonitoringError(
            f"endpoint {deploy['name']} logs its payload into {deploy['payload_store']} but this use case's "
            f"monitoring store is {store.masked_url}: deploy again with the same monitoring.database_url "
            "(modelcycle deploy --force)")
    baseline = _baseline(use_case, Path(train["model_dir"]))
    schema = payload_schema(_manifest_schema(train.get("model_dir")))
    monitors = monitoring.model_dump(mode="json", include={"payload", "quality", "drift"})
    from modelcycle.core.monitoring.thresholds import effective_thresholds

    for name in ("quality", "drift"):
        monitors[name]["thresholds"] = effective_thresholds(name, getattr(monitoring, name).thresholds)
    previous = state.stage("monitor").outputs
    row = store.create_subscription(
        use_case.config.name, deploy["name"], train.get("run_id"), deploy.get("url"), schema, monitors, baseline,
    )
    try:
        _delete_remote(use_case, store, previous, mirror)
        remote = mirror.backend.subscribe(use_case.config.name, deploy, train.get("run_id"), monitoring.quality)
    except BaseException:
        store.delete_subscription(row["id"])
        raise
    return {
        "subscription_id": row["id"],
        "deployment_id": deploy["name"],
        "asset_revision": train.get("run_id"),
        "store": store.masked_url,
        "payload_logging": bool(deploy.get("payload_logging")),
        "payload_schema": schema,
        "monitors": monitors,
        "baseline": {k: baseline[k] for k in ("records", "accuracy", "source") if k in baseline},
        "created_at": row["created_at"],
        "backend": mirror.name,
        "backend_title": mirror.title,
        **({mirror.name: remote} if remote else {}),
    }


def subscription_valid(use_case: UseCaseView, outputs: dict[str, Any], backend: str) -> bool:
    """The recorded subscription is still active, follows the current deployment and was made
    with monitoring backend ``backend`` (the configured one)."""
    deploy = use_case.store.read().stage("deploy").outputs
    subscription_id = outputs.get("subscription_id")
    if not subscription_id or outputs.get("deployment_id") != deploy.get("name"):
        return False
    if outputs.get("backend", "local") != backend:
        return False  # mirrored elsewhere since: subscribe there
    found = store_for(use_case).subscription(subscription_id)
    return bool(found) and found["deleted_at"] is None


# -- the backend's mirror ----------------------------------------------------------------------
def _remote_ids(outputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(backend name, ids)`` of what a backend made for the recorded subscription, if anything."""
    name = outputs.get("backend")
    ids = outputs.get(name) if name else None
    return (name, ids) if isinstance(ids, dict) and ids else None


def _delete_remote(use_case: UseCaseView, store: MonitoringStore, outputs: Mapping[str, Any],
                   mirror: Mirror | None = None) -> dict[str, int]:
    """Delete what a backend made for the subscription recorded in ``outputs`` (with ``mirror``
    when it is that backend, else with the backend that made it) and forget which records were
    forwarded to it (a backend marks them under targets its ids name). Returns ``{name: count}``."""
    remote = _remote_ids(outputs)
    if remote is None:
        return {}
    name, ids = remote
    backend = mirror if mirror is not None and mirror.name == name else open_mirror(use_case, name)
    removed = int(backend.backend.delete(ids))
    store.forget_forwarded([value for value in ids.values() if isinstance(value, str)])
    return {name: removed}


def _manifest_schema(model_dir: str | None) -> Any:
    """The trained model's input schema, or None when its manifest cannot be read."""
    from modelcycle.core.artifacts import read_manifest

    try:
        return read_manifest(Path(model_dir)).input_schema if model_dir else None
    except Exception:  # a record still goes out, flat
        return None


def _input_shape(model_dir: str | None) -> Any:
    """What a backend's ``forward`` needs to rebuild an input: the image shape ``(C, H, W)``, or
    a tabular model's field names (a list)."""
    schema = _manifest_schema(model_dir)
    if schema is None:
        return None
    return schema.field_names if schema.kind == "tabular" else tuple(schema.shape)


def forward(use_case: UseCaseView, store: MonitoringStore, mirror: Mirror,
            then: Callable[[Any, dict[str, Any]], Any] | None = None) -> dict[str, Any] | None:
    """Send ``mirror`` the payload and feedback records it does not hold yet; ``then(backend,
    ids)`` runs next on the same backend object. Returns ``{"sent": {payload, feedback}, "then":
    ...}``, or ``None`` when the subscription is not mirrored by that backend."""
    state = use_case.store.read()
    monitor = state.stage("monitor").outputs
    remote = _remote_ids(monitor)
    if remote is None or remote[0] != mirror.name:
        return None
    ids = remote[1]
    sent = mirror.backend.forward(store, monitor["deployment_id"], ids,
                                  _input_shape(state.stage("train").outputs.get("model_dir")))
    return {"sent": sent, "then": then(mirror.backend, ids) if then else None}


def _forwarded(result: dict[str, Any], use_case: UseCaseView, store: MonitoringStore, mirror: Mirror) -> dict[str, Any]:
    """``result`` with what ``mirror`` was sent: ``backend``, ``backend_title`` and the counts
    under the backend's name (nothing added when the subscription is not mirrored)."""
    forwarded = forward(use_case, store, mirror)
    if forwarded is not None:
        result.update({"backend": mirror.name, "backend_title": mirror.title, mirror.name: forwarded["sent"]})
    return result


def _subscription(use_case: UseCaseView, store: MonitoringStore) -> dict[str, Any]:
    outputs = use_case.store.read().stage("monitor").outputs
    subscription = store.subscription(outputs["subscription_id"]) if outputs.get("subscription_id") else None
    if subscription is None or subscription["deleted_at"] is not None:
        raise StageError("evaluate", "no monitoring subscription: run 'modelcycle monitor' first")
    return subscription


def _deployment_id(use_case: UseCaseView) -> str:
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


def _error_message(document: Any) -> str:
    error = document.get("error", document) if isinstance(document, dict) else document
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)


def log_payload(use_case: UseCaseView, samples: int = 100, dataset: str | None = None, offset: int = 0,
                images: Any = None) -> dict[str, Any]:
    """Score ``samples`` test images of ``dataset`` (from ``offset``) — or the given raw
    ``images`` — on the endpoint in requests of 100, and wait until their records are stored."""
    import orjson

    if images is None and samples <= 0:
        raise MonitoringError(f"log-payload: --samples must be positive, got {samples}")
    mirror = open_mirror(use_case)
    endpoint = _require_endpoint(use_case, "log-payload")
    name = (dataset or use_case.config.data.dataset) if images is None else None
    if images is None:
        from modelcycle.core.datasets import load_dataset

        test = load_dataset(name, settings=use_case.config.data if dataset is None else None).test
        images = test.images[offset:offset + samples]
    images = np.asarray(images)
    if len(images) == 0:
        raise MonitoringError("log-payload: no images to score (check --samples and --offset)")
    from modelcycle.core.serving.script_client import script_manifest

    manifest = script_manifest(endpoint, use_case.work_dir)
    if manifest is not None:  # the user's handlers answer: ids come from the payload log
        return _log_script_payload(use_case, mirror, endpoint, manifest, images, name)
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
    return _forwarded({
        "deployment_id": endpoint["name"], "dataset": name,
        "records": len(scoring_ids), "stored": stored, "scoring_ids": scoring_ids,
        "unit": "records" if images.ndim == 2 else "images",
        "seconds": time.perf_counter() - started, "payload_logging": bool(endpoint.get("payload_logging")),
    }, use_case, store, mirror)


def _log_script_payload(use_case: UseCaseView, mirror: Mirror, endpoint: dict[str, Any], manifest: Any,
                        images: np.ndarray, name: str | None) -> dict[str, Any]:
    """``log_payload`` on a script-mode endpoint: the images go as NPY (what the seeds' handlers
    read) and every answer must read as predictions (:mod:`~modelcycle.core.serving.script_client`).
    The body is the handlers', so the records' ids are taken from the payload log: those stored
    for the endpoint after the ones already there (traffic of other clients meanwhile is counted
    too)."""
    from modelcycle.core.errors import ServingError
    from modelcycle.core.serving.script_client import REQUEST_TYPE, npy_body, read_answer

    store = store_for(use_case)
    flush_payload(use_case, store)
    before = store.payload_count(endpoint["name"])
    started = time.perf_counter()
    token = use_case.config.endpoint_token()
    for start in range(0, len(images), _REQUEST_IMAGES):
        chunk = images[start:start + _REQUEST_IMAGES]
        status, payload, content_type = use_case.registry.call_platform(
            endpoint["platform"], "invoke_endpoint", endpoint=endpoint, body=npy_body(chunk),
            content_type=REQUEST_TYPE, accept="application/json", token=token,
        )
        if status != 200:
            raise MonitoringError(f"log-payload: endpoint answered {status}: {payload.decode(errors='replace')[:500]}")
        try:
            read_answer(payload, content_type, len(chunk), len(manifest.classes))
        except ServingError as exc:
            raise MonitoringError(f"log-payload: {exc}") from None
    flush_payload(use_case, store)
    new = store.payload_records(endpoint["name"], with_input=False, offset=before)
    scoring_ids = [record["scoring_id"] for record in new]
    return _forwarded({
        "deployment_id": endpoint["name"], "dataset": name,
        "records": len(images), "stored": len(scoring_ids), "scoring_ids": scoring_ids,
        "unit": "records" if images.ndim == 2 else "images",
        "seconds": time.perf_counter() - started, "payload_logging": bool(endpoint.get("payload_logging")),
    }, use_case, store, mirror)


def _image_key(pixels: bytes) -> bytes:
    return hashlib.blake2b(pixels, digest_size=16).digest()


def _known_labels(use_case: UseCaseView) -> dict[bytes, int]:
    """Test images of the use case's dataset by content (C×H×W bytes) → label; an image that
    appears twice with different labels is left out."""
    from modelcycle.core.datasets import load_dataset

    test = load_dataset(use_case.config.data.dataset, settings=use_case.config.data).test
    if test.images.ndim == 2:  # tabular records: stored as their float32 values
        images = np.ascontiguousarray(test.images, dtype="<f4")
    else:
        images = np.ascontiguousarray(test.images if test.images.ndim == 3 else test.images.transpose(0, 3, 1, 2))
    table: dict[bytes, int] = {}
    for image, label in zip(images, test.labels.tolist()):
        key = _image_key(image.tobytes())
        table[key] = label if table.get(key, label) == label else -1
    return table


def log_feedback(use_case: UseCaseView, samples: int = 100) -> dict[str, Any]:
    """Label ``samples`` payload records: the oldest unlabelled ones whose input is a test image
    (its label is known); if there are not enough, have the serving platform score more labelled
    test images (platform hook ``send_feedback``)."""
    mirror = open_mirror(use_case)
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
    return _forwarded({
        "deployment_id": deployment_id, "feedback_records": samples, "matched_payload": len(matched),
        "scored": scored, "total_feedback": store.feedback_count(deployment_id),
    }, use_case, store, mirror)


def _score_labelled(use_case: UseCaseView, count: int, matched: int) -> int:
    """Send ``count`` labelled test images to the endpoint's platform (``send_feedback``)."""
    from modelcycle.core.datasets import load_dataset

    endpoint = _require_endpoint(use_case, "log-feedback")
    platform = _platform(use_case, endpoint, "send_feedback")
    short = f"log-feedback: only {matched} unlabelled payload records are known test images"
    if platform is None:
        raise MonitoringError(f"{short} and platform {endpoint.get('platform')} cannot score labelled records; "
                              "run 'modelcycle log-payload' first")
    test = load_dataset(use_case.config.data.dataset, settings=use_case.config.data).test.take(count)
    rows = [[image, int(label)] for image, label in zip(test.images, test.labels)]
    try:
        return int(use_case.registry.call_platform(
            platform, "send_feedback", endpoint=endpoint, rows=rows, token=use_case.config.endpoint_token()))
    except EndpointError as exc:
        raise MonitoringError(f"{short}: {exc}") from None


def attach_feedback(use_case: UseCaseView, labels: Mapping[str, int]) -> int:
    """Attach ground truth ``{scoring_id: label}`` to earlier scored records; returns the count.

    Raises:
        UnknownScoringIdError: some ids are not in the payload log (nothing is stored then).
        MonitoringError: a label is not a class index of the model.
    """
    mirror = open_mirror(use_case)
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
    forward(use_case, store, mirror)
    return stored


# -- evaluations -------------------------------------------------------------------------------
def _evaluate_once(use_case: UseCaseView, store: MonitoringStore, mirror: Mirror, plots: bool) -> list[dict[str, Any]]:
    from modelcycle.core.monitoring.evaluation import present, run_evaluation

    subscription = _subscription(use_case, store)
    flush_payload(use_case, store)
    remote: dict[str, Any] = {}
    if use_case.config.monitoring.quality.enabled:
        mirrored = forward(use_case, store, mirror, then=lambda backend, ids: backend.run_quality(ids))
        if mirrored is not None and mirrored["then"] is not None:
            remote["quality"] = {mirror.name: {**mirrored["then"], "backend_title": mirror.title}}
    results = run_evaluation(store, subscription, use_case.config.monitoring, remote)
    if plots:
        from modelcycle.core.monitoring.plots import write_plots

        history = [present(m) for m in store.measurements(subscription["id"])]
        paths = write_plots(results, history, use_case.work_dir / "plots")
        for result in results:
            result["plots"] = paths
    return results


def evaluate(use_case: UseCaseView, fail_on_violation: bool = False, plots: bool = True, every: float | None = None,
             times: int | None = None, on_result: Callable[[list[dict[str, Any]]], Any] | None = None,
             ) -> list[dict[str, Any]]:
    """Run every enabled monitor and store a measurement for each; optionally write plots.

    Args:
        fail_on_violation: once done, raise :class:`ThresholdViolationError` if any evaluation
            violated a threshold.
        plots: write PNGs under ``.modelcycle/plots/``.
        every: evaluate again every this many seconds (a schedule), ``times`` times, or until
            interrupted when ``times`` is ``None``.
        times: how many evaluations (default 1 without ``every``); without ``every`` they run
            back to back.
        on_result: called with each evaluation's measurements as soon as they are stored.

    Returns:
        Every measurement stored, in order (one per enabled monitor and evaluation).
    """
    if every is not None and every <= 0:
        raise MonitoringError(f"evaluate: every must be a positive number of seconds, got {every}")
    if times is not None and times <= 0:
        raise MonitoringError(f"evaluate: times must be positive, got {times}")
    count = times if times is not None else (1 if every is None else None)
    mirror = open_mirror(use_case)  # one backend (one signed-in client) for every evaluation
    store = store_for(use_case)
    measured: list[dict[str, Any]] = []
    violating: list[dict[str, Any]] = []
    done = 0
    while True:
        started = time.monotonic()
        results = _evaluate_once(use_case, store, mirror, plots)
        done += 1
        measured += results
        violating += [result for result in results if result["violations"]]
        if on_result is not None:
            on_result(results)
        if count is not None and done >= count:
            break
        if every is not None:
            time.sleep(max(0.0, every - (time.monotonic() - started)))
    if fail_on_violation and violating:
        raise ThresholdViolationError(violating)
    return measured


def evaluations(use_case: UseCaseView, limit: int | None = None) -> list[dict[str, Any]]:
    """Stored measurements of the use case (every subscription it had), oldest first."""
    from modelcycle.core.monitoring.evaluation import present

    return [present(m) for m in store_for(use_case).measurements(use_case=use_case.config.name, limit=limit)]


def cleanup(use_case: UseCaseView, records: bool = False) -> dict[str, int]:
    """Delete the subscription (``{"monitoring": 1}``; what its backend made too, counted under
    the backend's name) after the serving platform brought in what the stopped endpoint logged;
    with ``records`` also its payload, feedback and measurements. Called by ``UseCase.cleanup``
    once the endpoint is stopped."""
    state = use_case.store.read()
    outputs = state.stage("monitor").outputs
    subscription_id = outputs.get("subscription_id")
    deployment_id = outputs.get("deployment_id") or state.stage("deploy").outputs.get("name")
    if not subscription_id and not records:
        return {}
    if not deployment_id:
        return {}
    store = store_for(use_case)
    # first: a failure leaves the local subscription and the state as they were
    removed: dict[str, int] = _delete_remote(use_case, store, outputs)
    if subscription_id and store.delete_subscription(subscription_id):
        removed["monitoring"] = 1
    flush_payload(use_case, store)
    if records:
        removed.update(store.delete_records(deployment_id, subscription_id))
        platform = _platform(use_case, None, "delete_payload")  # what the platform logged elsewhere
        if platform is not None:
            removed.update(use_case.registry.call_platform(
                platform, "delete_payload", endpoint=state.stage("deploy").outputs, work_dir=use_case.work_dir))
    return removed
