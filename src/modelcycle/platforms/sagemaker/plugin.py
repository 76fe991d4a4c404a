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
    """Model → endpoint config → endpoint, waited on until InService. SageMaker endpoints are
    authenticated by IAM (SigV4), so ``token`` does not apply."""
    from modelcycle.platforms.sagemaker import endpoints

    return endpoints.deploy(name, Path(model_dir), settings, Path(work_dir))


@hookimpl
def invoke_endpoint(endpoint: dict[str, Any], body: bytes, content_type: str, accept: str, token: str | None) -> tuple[int, bytes, str]:
    from modelcycle.platforms.sagemaker import endpoints

    return endpoints.invoke(endpoint, body, content_type, accept)


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
    """SageMaker endpoints log no payload into the monitoring store: nothing to bring in (0)."""
    return 0


@hookimpl
def send_feedback(endpoint: dict[str, Any], rows: list[Any], token: str | None) -> int:
    """A SageMaker endpoint cannot store labelled records itself."""
    from modelcycle.core.errors import EndpointError

    raise EndpointError(
        f"SageMaker endpoint {endpoint.get('name')} cannot store labelled records itself: score test images "
        "with 'modelcycle log-payload' first, then label them with 'modelcycle log-feedback'")


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
