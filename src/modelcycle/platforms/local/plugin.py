"""Hook implementations of the local platform (entry point ``local`` in ``modelcycle.platforms``).

Endpoints are detached uvicorn processes (:mod:`.server`, :mod:`.app`); with payload logging
on, each journals its scored records (:mod:`.payload`, :mod:`.journal`) and a child process
drains them into the monitoring store (:mod:`.drainer`); :mod:`.routes` serves ``/feedback``
and ``/payload/flush``, which ``flush_payload`` and ``send_feedback`` call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.markers import hookimpl
from modelcycle.platforms.local import endpoints

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.config import ServingConfig
    from modelcycle.core.monitoring.store import MonitoringStore
    from modelcycle.core.training import TrainingContext, TrainingResult


@hookimpl
def run_training_job(context: TrainingContext) -> TrainingResult:
    """Train in this process, or — with ``training.mode: container`` or several instances — run
    the SageMaker container contract locally (``SM_*`` environment, one process per host); in
    script mode (``training.entry_point``) the user's own script runs through that contract."""
    training = context.config.training
    if training.script_mode:
        from modelcycle.platforms.local.script_job import run_script_job

        return run_script_job(context)
    if training.mode == "container" or training.instance_count > 1:
        from modelcycle.platforms.local.container import run_container_job

        return run_container_job(context)
    from modelcycle.core.training import train_in_process

    return train_in_process(context)


@hookimpl
def deploy_endpoint(name: str, model_dir: Path, settings: ServingConfig, token: str | None, work_dir: Path,
                    monitoring: Any) -> dict[str, Any]:
    """Start a detached uvicorn process serving ``model_dir``; wait for ``/ping``.

    The use case's live endpoint, if any, keeps serving: the new process takes over its listening
    socket (same URL, no connection dropped) and the caller stops the old one with
    ``delete_endpoint``. Each process has its own ready file, log and payload journal (the
    endpoint ``name`` may be the same). Payload logging follows ``monitoring.payload`` (the use
    case's, with its overrides): on by default, journaled under ``work_dir/endpoints``. A token
    from ``MODELCYCLE_ENDPOINT_TOKEN`` must pass the same rules as ``serving.token``
    (ConfigError otherwise).
    """
    import secrets

    from modelcycle.platforms.local.payload import endpoint_payload_settings

    _check_token(token, settings)
    instance = f"{name}.{secrets.token_hex(4)}"
    return endpoints.start_endpoint(
        name,
        Path(model_dir),
        Path(work_dir) / "endpoints",
        host=settings.host,
        port=settings.port,
        token=token,
        threads=settings.threads,
        max_body_mb=settings.max_body_mb,
        timeout=settings.startup_timeout_s,
        payload=endpoint_payload_settings(Path(work_dir), instance, monitoring),
        slot=Path(work_dir) / "endpoints",
        instance=instance,
    )


def _check_token(token: str | None, settings: ServingConfig) -> None:
    from modelcycle.core.config import ServingConfig
    from modelcycle.core.errors import ConfigError

    if token is not None:
        source = "serving.token" if settings.token is not None else "MODELCYCLE_ENDPOINT_TOKEN"
        try:
            ServingConfig.check_token(token, source)
        except ValueError as exc:
            raise ConfigError(f"cannot deploy: {exc}") from None


@hookimpl
def invoke_endpoint(endpoint: dict[str, Any], body: bytes, content_type: str, accept: str, token: str | None) -> tuple[int, bytes, str]:
    headers = {"Content-Type": content_type, "Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return endpoints.request(endpoint["host"], endpoint["port"], "POST", "/invocations", body, headers)


@hookimpl
def describe_endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
    """The record with its live ``status`` and, when there is one, ``status_reason``."""
    status, reason = endpoints.endpoint_health(endpoint)
    record = {key: value for key, value in endpoint.items() if key != "status_reason"}
    return {**record, "status": status, **({"status_reason": reason} if reason else {})}


@hookimpl
def delete_endpoint(endpoint: dict[str, Any]) -> int:
    return endpoints.stop_endpoint(endpoint)


_FEEDBACK_ROWS = 100  # labelled records per /feedback request


@hookimpl
def flush_payload(endpoint: dict[str, Any] | None, store: MonitoringStore, work_dir: Path, token: str | None) -> int:
    """Ask the live endpoint to drain its journal (``POST /payload/flush``: every record it
    answered is stored when this returns), then drain the journals no endpoint process holds
    under ``work_dir/endpoints`` (a stopped or killed endpoint's records are not lost)."""
    from modelcycle.core.monitoring.errors import MonitoringError
    from modelcycle.platforms.local.journal import drain_orphaned_journals

    moved = 0
    if endpoint is not None and endpoint.get("status") == "InService" and endpoint.get("payload_journal"):
        status, document = endpoints.post_json(endpoint, "/payload/flush", {}, token)
        if status != 200:
            raise MonitoringError(
                f"endpoint {endpoint['name']} could not flush its payload log ({status}): {endpoints.error_message(document)}")
        moved += int(document.get("drained", 0))
    return moved + drain_orphaned_journals(Path(work_dir) / "endpoints", store)


@hookimpl
def send_feedback(endpoint: dict[str, Any], rows: list[Any], token: str | None) -> int:
    """Score the labelled ``rows`` (``[[raw pixels, label], ...]``) through the endpoint's
    ``POST /feedback``, which logs each as payload and stores its label; returns the count stored.

    Raises:
        EndpointError: the endpoint does not log its payload (it was deployed with
            ``monitoring.payload.enabled: false``).
        MonitoringError: the endpoint refused the records.
    """
    from modelcycle.core.errors import EndpointError
    from modelcycle.core.monitoring.errors import MonitoringError

    if not endpoint.get("payload_journal"):
        raise EndpointError(
            f"endpoint {endpoint['name']} does not log its payload (deployed with monitoring.payload.enabled: "
            "false), so it cannot store labelled records: deploy again with payload logging on")
    stored = 0
    for start in range(0, len(rows), _FEEDBACK_ROWS):
        document = {"fields": ["scoring_input", "label"], "values": rows[start:start + _FEEDBACK_ROWS]}
        status, answer = endpoints.post_json(endpoint, "/feedback", document, token)
        if status != 200:
            raise MonitoringError(f"endpoint {endpoint['name']} answered {status} to /feedback: {endpoints.error_message(answer)}")
        stored += int(answer.get("stored", 0))
    return stored
