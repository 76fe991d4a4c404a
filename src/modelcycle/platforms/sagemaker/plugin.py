"""Hook implementations of the SageMaker platform (entry point ``sagemaker`` in ``modelcycle.platforms``).

Selected per role: ``training: {platform: sagemaker}`` runs SageMaker training jobs,
``serving: {platform: sagemaker}`` real-time endpoints. boto3 and the sagemaker SDK (2.x) are
imported only when a hook runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.markers import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.config import ServingConfig
    from modelcycle.core.training import TrainingContext, TrainingResult


@hookimpl
def add_commands(subparsers: Any, use_case: Any, print_json: Any) -> None:
    """``pipeline export`` and ``import-signature`` (argparse only: nothing heavy is imported)."""
    from modelcycle.platforms.sagemaker.commands import add_commands as add

    add(subparsers, use_case, print_json)


@hookimpl
def export_pipeline(config: Any, format: str, graph: Path | None, workflow_role: str | None, upload: bool) -> dict[str, Any]:
    """The Step Functions train → model → endpoint config → endpoint state machine (``asl``), or
    the input of ``aws stepfunctions create-state-machine`` (``json``)."""
    from modelcycle.platforms.sagemaker import pipeline

    return pipeline.export(config, format, graph, workflow_role, upload)


@hookimpl
def run_training_job(context: TrainingContext) -> TrainingResult:
    """Upload data and source dir, run the PyTorch (or TensorFlow) estimator, fetch the model."""
    from modelcycle.platforms.sagemaker import training

    return training.run_training_job(context)


@hookimpl
def deploy_endpoint(name: str, model_dir: Path, settings: ServingConfig, token: str | None, work_dir: Path) -> dict[str, Any]:
    """Model → endpoint config (with Data Capture, ``serving.data_capture``) → endpoint, waited on
    until InService. SageMaker endpoints are authenticated by IAM (SigV4), so ``token`` does not
    apply. A capturing endpoint logs its payload (``payload_logging``): its capture is noted under
    ``work_dir`` for ``flush_payload``."""
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.platforms.sagemaker import capture, endpoints

    record = endpoints.deploy(name, Path(model_dir), settings, Path(work_dir))
    revisions = {v.name: read_manifest(endpoints._run_model_dir(Path(work_dir), v.run)).run_id
                 for v in settings.variants if v.run}  # a canary's records name the run it serves
    state = capture.remember(Path(work_dir), record, Path(model_dir), read_manifest(Path(model_dir)).run_id, revisions)
    if state is not None:
        record["data_capture"]["state"] = str(state)
    record["payload_logging"] = state is not None
    return record


@hookimpl
def invoke_endpoint(endpoint: dict[str, Any], body: bytes, content_type: str, accept: str, token: str | None) -> tuple[int, bytes, str]:
    """InvokeEndpoint; on a capturing endpoint with a fresh ``InferenceId``, which a JSON answer
    then carries as its ``scoring_id`` (``scoring_ids`` for several records), as the local
    endpoint's answers do: the ids its captured records get."""
    from modelcycle.platforms.sagemaker import capture, endpoints

    if not endpoint.get("data_capture"):
        return endpoints.invoke(endpoint, body, content_type, accept)
    given = capture.inference_id()
    status, payload, returned = endpoints.invoke(endpoint, body, content_type, accept, given)
    return status, capture.with_scoring_ids(status, payload, returned, given), returned


@hookimpl
def describe_endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
    from modelcycle.platforms.sagemaker import endpoints

    return endpoints.describe(endpoint)


@hookimpl
def delete_endpoint(endpoint: dict[str, Any]) -> int:
    from modelcycle.platforms.sagemaker import endpoints

    return endpoints.delete(endpoint)


@hookimpl
def flush_payload(endpoint: dict[str, Any] | None, store: Any, work_dir: Path, token: str | None) -> int:
    """Ingest the Data Capture objects not ingested yet (of ``endpoint`` and of every endpoint of
    this use case that captured before); see :func:`.capture.ingest`."""
    from modelcycle.platforms.sagemaker import capture

    return capture.ingest(endpoint, store, Path(work_dir))


@hookimpl
def send_feedback(endpoint: dict[str, Any], rows: list[Any], token: str | None) -> int:
    """Score the labelled rows with an ``InferenceId`` per request; the labels attach to the
    records whose capture carries it, when it is ingested. Returns the rows sent."""
    from modelcycle.platforms.sagemaker import capture, endpoints

    def invoke(body: bytes, content_type: str, inference_id: str) -> tuple[int, bytes, str]:
        return endpoints.invoke(endpoint, body, content_type, "application/json", inference_id)

    return capture.send_feedback(endpoint, rows, invoke)


@hookimpl
def fetch_transform_input(uri: str, directory: Path) -> list[str] | None:
    """The ``.npy``/``.jsonl`` objects under an ``s3://`` prefix, downloaded for ``modelcycle transform``."""
    if not uri.startswith("s3://"):
        return None
    from modelcycle.platforms.sagemaker import transform

    return transform.fetch_input(uri, Path(directory))


@hookimpl
def store_transform_output(path: Path, uri: str) -> str | None:
    """Upload ``modelcycle transform``'s output to an ``s3://`` object."""
    if not uri.startswith("s3://"):
        return None
    from modelcycle.platforms.sagemaker import transform

    return transform.store_output(Path(path), uri)


@hookimpl
def run_transform_job(name: str, model_dir: Path, settings: ServingConfig, work_dir: Path, input: str | Path,
                      content_type: str, split_type: str | None, directory: Path) -> dict[str, Any]:
    """A SageMaker Transformer job over ``input`` with the model of ``model_dir``."""
    from modelcycle.platforms.sagemaker import transform

    return transform.run_job(name, Path(model_dir), settings, Path(work_dir), input, content_type, split_type,
                             Path(directory))


@hookimpl
def delete_payload(endpoint: dict[str, Any] | None, work_dir: Path) -> dict[str, int]:
    """``cleanup --records``: delete the captured S3 objects that were ingested."""
    from modelcycle.platforms.sagemaker import capture

    return {"captured_objects": capture.delete_captured(endpoint, Path(work_dir))}
