"""Hook implementations of the local platform (entry point ``local`` in ``modelcycle.platforms``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.markers import hookimpl
from modelcycle.platforms.local import endpoints

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.config import ServingConfig
    from modelcycle.core.training import TrainingContext, TrainingResult


@hookimpl
def run_training_job(context: TrainingContext) -> TrainingResult:
    """Train in this process, or — with ``training.mode: container`` or several instances — run
    the SageMaker container contract locally (``SM_*`` environment, one process per host)."""
    training = context.config.training
    if training.mode == "container" or training.instance_count > 1:
        from modelcycle.platforms.local.container import run_container_job

        return run_container_job(context)
    from modelcycle.core.training import train_in_process

    return train_in_process(context)


@hookimpl
def deploy_endpoint(name: str, model_dir: Path, settings: ServingConfig, token: str | None, work_dir: Path,
                    monitoring: Any) -> dict[str, Any]:
    """Start a detached uvicorn process serving ``model_dir``; wait for ``/ping``.

    Payload logging follows ``monitoring.payload`` (the use case's, with its overrides): on by
    default, journaled under ``work_dir/endpoints``.
    """
    from modelcycle.core.monitoring.payload import endpoint_payload_settings

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
        payload=endpoint_payload_settings(Path(work_dir), name, monitoring),
    )


@hookimpl
def invoke_endpoint(endpoint: dict[str, Any], body: bytes, content_type: str, accept: str, token: str | None) -> tuple[int, bytes, str]:
    headers = {"Content-Type": content_type, "Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return endpoints.request(endpoint["host"], endpoint["port"], "POST", "/invocations", body, headers)


@hookimpl
def describe_endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {**endpoint, "status": endpoints.endpoint_status(endpoint)}


@hookimpl
def delete_endpoint(endpoint: dict[str, Any]) -> int:
    return endpoints.stop_endpoint(endpoint)
