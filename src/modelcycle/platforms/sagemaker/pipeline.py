"""The train → create model → endpoint config → endpoint workflow as a Step Functions state machine.

:func:`state_machine` writes the Amazon States Language definition the Step Functions Data
Science SDK's ``TrainingPipeline`` builds (seed 003), from the use case's config and without any
AWS call: the SageMaker service integrations ``createTrainingJob.sync``, ``createModel``,
``createEndpointConfig`` and ``createEndpoint``, each failure caught into one Fail state. The
execution's name names every resource (training job, model, endpoint config, endpoint), so start
executions with a valid SageMaker name: letters, digits and hyphens, at most 63 characters.

The training job runs the source dir ``modelcycle train`` ships (``train.py`` + the resolved
``modelcycle.yaml``) from ``s3://<bucket>/<prefix>/code/pipeline/sourcedir.tar.gz`` on the
channels under ``data/<dataset>/``; :func:`upload_inputs` (``pipeline export --upload``) puts
them there.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ConfigError
from modelcycle.platforms.sagemaker import session as aws

__all__ = ["STATES", "state_machine", "create_state_machine_input", "draw", "upload_inputs", "source_uri"]

SAGEMAKER = "arn:aws:states:::sagemaker:"
#: (state name, service integration, what it does), in execution order.
STATES = (
    ("Train", "createTrainingJob.sync", "training job, waited on"),
    ("Create Model", "createModel", "model from the job's model.tar.gz"),
    ("Create Endpoint Config", "createEndpointConfig", "production variant"),
    ("Create Endpoint", "createEndpoint", "real-time endpoint"),
)
FAIL_STATE = "Pipeline Failed"
WORKFLOW_ROLE_PLACEHOLDER = "<StepFunctions workflow execution role ARN>"


def _settings(config: Any) -> aws.AwsSettings:
    return aws.resolve_settings(config.training, config.name, bucket_needed_for="pipeline export")


def source_uri(settings: aws.AwsSettings) -> str:
    return settings.s3_uri("code", "pipeline", "sourcedir.tar.gz")


def _hyperparameters(config: Any, settings: aws.AwsSettings) -> dict[str, str]:
    """As the SDK sends them: every value JSON-encoded into a string."""
    from modelcycle.core.entrypoint import ENTRY_SCRIPT, job_hyperparameters

    hps: dict[str, Any] = {
        **job_hyperparameters(config),
        "sagemaker_program": ENTRY_SCRIPT,
        "sagemaker_submit_directory": source_uri(settings),
        "sagemaker_region": settings.region,
        "sagemaker_container_log_level": 20,
    }
    return {name: json.dumps(value) for name, value in hps.items()}


def state_machine(config: Any) -> dict[str, Any]:
    """The ASL definition (a JSON-serialisable dict) for the use case's config.

    Raises:
        ConfigError: no role, region or bucket; a framework without a SageMaker container.
    """
    settings = _settings(config)
    training, serving = config.training, config.serving
    version, py_version = aws.framework_versions(config.framework, training)
    serve_version, serve_py = aws.framework_versions(config.framework, serving)
    train_image = aws.image_uri(config.framework, settings.region, version, py_version, training.instance_type, "training")
    serve_image = aws.image_uri(config.framework, settings.region, serve_version, serve_py, serving.instance_type, "inference")
    name = "$$.Execution.Name"
    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.Error", "Next": FAIL_STATE}]
    channels = [
        {
            "ChannelName": channel,
            "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": settings.s3_uri("data", config.data.dataset, channel) + "/",
                "S3DataDistributionType": "FullyReplicated",
            }},
        }
        for channel in ("training", "testing")
    ]
    states: dict[str, Any] = {
        "Train": {
            "Type": "Task",
            "Resource": SAGEMAKER + "createTrainingJob.sync",
            "Parameters": {
                "TrainingJobName.$": name,
                "AlgorithmSpecification": {"TrainingImage": train_image, "TrainingInputMode": "File"},
                "RoleArn": settings.role,
                "HyperParameters": _hyperparameters(config, settings),
                "InputDataConfig": channels,
                "OutputDataConfig": {"S3OutputPath": settings.s3_uri("output")},
                "ResourceConfig": {
                    "InstanceCount": training.instance_count,
                    "InstanceType": training.instance_type,
                    "VolumeSizeInGB": training.volume_size,
                },
                "StoppingCondition": {"MaxRuntimeInSeconds": training.max_run},
                "Environment": {"MODELCYCLE_RUN_ID.$": name},
            },
            "ResultPath": "$.Training",
            "Catch": catch,
            "Next": "Create Model",
        },
        "Create Model": {
            "Type": "Task",
            "Resource": SAGEMAKER + "createModel",
            "Parameters": {
                "ModelName.$": name,
                "ExecutionRoleArn": settings.role,
                "PrimaryContainer": {
                    "Image": serve_image,
                    "ModelDataUrl.$": "$.Training.ModelArtifacts.S3ModelArtifacts",
                    "Environment": {
                        "SAGEMAKER_PROGRAM": "inference.py",
                        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                        "SAGEMAKER_REGION": settings.region,
                        **aws.tensorflow_serving_env(config.framework),
                    },
                },
            },
            "ResultPath": None,
            "Catch": catch,
            "Next": "Create Endpoint Config",
        },
        "Create Endpoint Config": {
            "Type": "Task",
            "Resource": SAGEMAKER + "createEndpointConfig",
            "Parameters": {
                "EndpointConfigName.$": name,
                "ProductionVariants": [{
                    "VariantName": "AllTraffic",
                    "ModelName.$": name,
                    "InitialInstanceCount": serving.instance_count,
                    "InstanceType": serving.instance_type,
                    "InitialVariantWeight": 1,
                }],
            },
            "ResultPath": None,
            "Catch": catch,
            "Next": "Create Endpoint",
        },
        "Create Endpoint": {
            "Type": "Task",
            "Resource": SAGEMAKER + "createEndpoint",
            "Parameters": {"EndpointName.$": name, "EndpointConfigName.$": name},
            "ResultPath": "$.Endpoint",
            "Catch": catch,
            "End": True,
        },
        FAIL_STATE: {"Type": "Fail", "Error": "PipelineFailed", "Cause": "a SageMaker step failed: see $.Error"},
    }
    return {
        "Comment": (
            f"modelcycle use case '{config.name}': train → create model → endpoint config → endpoint. "
            "The execution name names the training job, model, endpoint config and endpoint "
            "(letters, digits, hyphens; at most 63 characters)."
        ),
        "StartAt": "Train",
        "States": states,
    }


def create_state_machine_input(config: Any, definition: dict[str, Any], workflow_role: str | None) -> dict[str, Any]:
    """``aws stepfunctions create-state-machine --cli-input-json`` input for ``definition``."""
    return {
        "name": f"{aws.SDK_FRAMEWORK.get(config.framework, 'modelcycle')}-{config.name}-pipeline".replace("_", "-"),
        "definition": json.dumps(definition),
        "roleArn": workflow_role or WORKFLOW_ROLE_PLACEHOLDER,
        "type": "STANDARD",
    }


def upload_inputs(config: Any) -> dict[str, str]:
    """Upload the dataset channels and ``code/pipeline/sourcedir.tar.gz`` the definition reads."""
    from botocore.exceptions import BotoCoreError, ClientError

    from modelcycle.core.entrypoint import write_source_dir
    from modelcycle.platforms.sagemaker.training import upload_dataset

    settings = _settings(config)
    session = aws.boto_session(settings.region)
    settings = aws.resolve_bucket(settings, session)
    s3 = session.client("s3")
    with tempfile.TemporaryDirectory(prefix="modelcycle-pipeline-") as tmp:
        source = Path(tmp) / "source"
        files = write_source_dir(config, source)
        archive = Path(tmp) / "sourcedir.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in files:
                tar.add(path, arcname=path.name)
        try:
            channels = upload_dataset(s3, config, settings)
            aws.upload_file(s3, archive, source_uri(settings))
        except (BotoCoreError, ClientError) as exc:
            raise aws.aws_error("uploading the pipeline's inputs", exc) from exc
    return {**channels, "source": source_uri(settings)}


def _details(config: Any) -> dict[str, str]:
    training, serving = config.training, config.serving
    distributed = f", {training.backend}" if training.backend else ""
    return {
        "Train": f"{training.instance_count} x {training.instance_type}{distributed}; {config.framework}, "
                 f"{config.hyperparameters.epochs} epochs",
        "Create Model": "model.tar.gz → code/inference.py handlers",
        "Create Endpoint Config": f"{serving.instance_count} x {serving.instance_type}, AllTraffic",
        "Create Endpoint": "InService → /invocations",
    }


def draw(definition: dict[str, Any], path: Path, config: Any = None, title: str | None = None) -> Path:
    """Draw ``definition`` as boxes and arrows (Start → states → End, failures to the Fail state)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    states = definition["States"]
    chain: list[str] = []
    current = definition["StartAt"]
    while current is not None and current not in chain:
        chain.append(current)
        current = None if states[current].get("End") else states[current].get("Next")
    details = _details(config) if config is not None else {}
    fails = [name for name, state in states.items() if state.get("Type") == "Fail"]
    step = 1.6
    height = step * (len(chain) + 1) + 0.6
    y_start = height - 0.6
    bottom = y_start - step * (len(chain) + 1) + 0.35 - 0.7
    fig, ax = plt.subplots(figsize=(8.4, 0.84 * (height - bottom + 0.2)))
    ax.set_xlim(0, 10)
    ax.set_ylim(bottom - 0.1, height + 0.1)
    ax.set_aspect("equal", adjustable="box")
    ax.axis("off")
    ys = {name: y_start - step * (i + 1) + 0.35 for i, name in enumerate(chain)}
    cx, width, box_h = 3.6, 5.0, 1.0
    fail_y = ys[chain[len(chain) // 2]] - 0.3 if chain else 0.0

    def arrow(x1: float, y1: float, x2: float, y2: float, dashed: bool = False, color: str = "#333333") -> None:
        ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), arrowstyle="-|>", mutation_scale=16, lw=1.5,
                                     color=color, linestyle="--" if dashed else "-", shrinkA=0, shrinkB=0))

    ax.add_patch(Circle((cx, y_start), 0.28, color="#2e7d32"))
    ax.text(cx, y_start, "Start", ha="center", va="center", color="white", fontsize=8, fontweight="bold")
    previous_bottom = y_start - 0.28
    for name in chain:
        state = states[name]
        y = ys[name]
        ax.add_patch(FancyBboxPatch((cx - width / 2, y - box_h / 2), width, box_h,
                                    boxstyle="round,pad=0.04,rounding_size=0.12", fc="#e3f2fd", ec="#1565c0", lw=1.6))
        resource = str(state.get("Resource", state.get("Type", ""))).replace("arn:aws:states:::", "")
        ax.text(cx, y + 0.26, name, ha="center", va="center", fontsize=12, fontweight="bold", color="#0d47a1")
        ax.text(cx, y - 0.02, resource, ha="center", va="center", fontsize=9, family="monospace", color="#333333")
        if name in details:
            ax.text(cx, y - 0.28, details[name], ha="center", va="center", fontsize=8.5, color="#555555")
        arrow(cx, previous_bottom, cx, y + box_h / 2)
        previous_bottom = y - box_h / 2
        if fails and state.get("Catch"):
            arrow(cx + width / 2, y, 7.6, fail_y, dashed=True, color="#c62828")
    y_end = previous_bottom - 0.7
    ax.add_patch(Circle((cx, y_end), 0.28, color="#37474f"))
    ax.text(cx, y_end, "End", ha="center", va="center", color="white", fontsize=8, fontweight="bold")
    arrow(cx, previous_bottom, cx, y_end + 0.28)
    if fails:
        fy = fail_y
        ax.add_patch(FancyBboxPatch((7.6, fy - 0.5), 2.3, 1.0, boxstyle="round,pad=0.04,rounding_size=0.12",
                                    fc="#ffebee", ec="#c62828", lw=1.6))
        ax.text(8.75, fy + 0.2, fails[0], ha="center", va="center", fontsize=10.5, fontweight="bold", color="#b71c1c")
        ax.text(8.75, fy - 0.08, "Type: Fail", ha="center", va="center", fontsize=8, color="#555555")
        ax.text(8.75, fy - 0.3, "catches States.ALL", ha="center", va="center", fontsize=8, color="#555555")
    ax.set_title(title or "Step Functions state machine", fontsize=13, fontweight="bold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def export(config: Any, format: str = "asl", graph: Path | None = None, workflow_role: str | None = None,
           upload: bool = False) -> dict[str, Any]:
    """What ``UseCase.pipeline`` returns: the ASL ``definition`` (or, with ``format="json"``, the
    create-state-machine input) as ``document``, its number of ``states``, the ``graph`` PNG
    written (when asked) and the S3 URIs ``uploaded`` (when asked)."""
    if format not in ("asl", "json"):
        raise ConfigError(f"pipeline export: unknown format '{format}'; use asl or json")
    definition = state_machine(config)
    document = definition if format == "asl" else create_state_machine_input(config, definition, workflow_role)
    if graph is not None:
        draw(definition, graph, config, title=f"{config.name}: SageMaker training pipeline")
    return {
        "document": document,
        "states": len(definition["States"]),
        "graph": str(graph) if graph is not None else None,
        "uploaded": upload_inputs(config) if upload else {},
    }
