"""SageMaker training jobs: upload the data and source dir, run the estimator, fetch the model.

The job runs the same entry point as the local container runner (``train.py`` →
:mod:`modelcycle.core.entrypoint`) with the use case's resolved ``modelcycle.yaml`` beside it;
in script mode (``training.entry_point``) it runs the user's own script instead
(:mod:`modelcycle.platforms.sagemaker.script`).
S3 layout under ``s3://<bucket>/<prefix>/``: ``data/<dataset>/{training,testing}/`` (uploaded
once, skipped when unchanged), ``code/<job>/source/sourcedir.tar.gz``, ``output/<job>/output/
{model.tar.gz,output.tar.gz}``. The run directory gets the model (downloaded and extracted) and
``sagemaker.json`` recording the job name, the ``model.tar.gz`` URI and where it ran.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.platforms.sagemaker import session as aws
from modelcycle.platforms.sagemaker.script import final_metrics

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.training import TrainingContext, TrainingResult

__all__ = ["JOB_RECORD", "launch_training_job", "run_training_job", "upload_dataset"]

#: The file beside a SageMaker-trained run's model directory that records the job.
JOB_RECORD = "sagemaker.json"


def upload_dataset(s3: Any, config: Any, settings: aws.AwsSettings) -> dict[str, str]:
    """Upload the dataset's files as the ``training`` and ``testing`` channels; returns their
    S3 prefixes (unchanged files are not uploaded again)."""
    from modelcycle.core.datasets import locate_dataset
    from modelcycle.core.entrypoint import channel_files

    directory = locate_dataset(config.data.dataset, config.data.path)
    channels: dict[str, str] = {}
    for channel, files in channel_files(config.data.dataset, directory).items():
        base = settings.s3_uri("data", config.data.dataset, channel)
        for path in files:
            aws.upload_file(s3, path, f"{base}/{path.name}")
        channels[channel] = base + "/"
    return channels


def _estimator(config: Any, settings: aws.AwsSettings, sm_session: Any, source_dir: Path, run_id: str) -> Any:
    from modelcycle.core.entrypoint import ENTRY_SCRIPT, job_hyperparameters

    training = config.training
    version, py_version = aws.framework_versions(config.framework, training)
    if training.script_mode:  # the user's own script, hyperparameters and metric definitions
        from modelcycle.platforms.sagemaker.script import estimator_arguments

        script = estimator_arguments(config, source_dir)
    else:
        script = dict(entry_point=ENTRY_SCRIPT, source_dir=str(source_dir), hyperparameters=job_hyperparameters(config))
    kwargs: dict[str, Any] = dict(
        **script,
        role=settings.role,
        framework_version=version,
        py_version=py_version,
        instance_count=training.instance_count,
        instance_type=training.instance_type,
        volume_size=training.volume_size,
        max_run=training.max_run,
        output_path=settings.s3_uri("output"),
        code_location=settings.s3_uri("code"),
        base_job_name=training.base_job_name or None,
        environment={"MODELCYCLE_RUN_ID": run_id},
        sagemaker_session=sm_session,
        disable_profiler=True,
        debugger_hook_config=False,
    )
    if aws.SDK_FRAMEWORK[config.framework] == "tensorflow":
        from sagemaker.tensorflow import TensorFlow

        return TensorFlow(model_dir=False, **kwargs)  # no S3 checkpoint dir passed as --model_dir
    from sagemaker.pytorch import PyTorch

    return PyTorch(**kwargs)


def launch_training_job(context: TrainingContext) -> dict[str, Any]:
    """Upload inputs, run the job and wait for it; returns the job record (no download).

    Raises:
        ConfigError: no role or region, a missing bucket, no credentials.
        StageError: the job failed or stopped (with SageMaker's FailureReason).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    aws.import_sdk()
    from sagemaker.inputs import TrainingInput

    from modelcycle.core.entrypoint import job_name, write_source_dir
    from modelcycle.core.errors import StageError
    from modelcycle.core.providers import framework_info

    config = context.config
    user_source = None
    if config.training.script_mode:  # a missing script is named before anything reaches AWS
        from modelcycle.platforms.sagemaker.script import user_source_dir

        user_source = user_source_dir(config, context.source_dir)
    settings = aws.resolve_settings(config.training, config.name)
    session = aws.boto_session(settings.region)
    settings = aws.resolve_bucket(settings, session)
    sm_session = aws.sagemaker_session(session, settings.bucket)
    out = None if context.reporter.quiet else context.reporter.stream
    name = job_name(config.training.base_job_name or config.name, context.run_id)
    source = Path(context.output_dir) / "source"
    if user_source is not None:
        from modelcycle.platforms.sagemaker.script import stage_source_dir

        stage_source_dir(user_source, source)
    else:
        write_source_dir(config, source, framework_info(context.registry, config.framework), context.source_dir)
    try:
        channels = upload_dataset(session.client("s3"), config, settings)
        estimator = _estimator(config, settings, sm_session, source, context.run_id)
        if out is not None:
            print(f"Starting SageMaker training job {name} ({config.training.instance_count} x "
                  f"{config.training.instance_type}) in {settings.region}", file=out, flush=True)
        inputs = {ch: TrainingInput(uri, distribution="FullyReplicated") for ch, uri in channels.items()}
        try:
            estimator.fit(inputs, wait=True, logs="All" if config.training.logs else False, job_name=name)
        except Exception as exc:  # the SDK raises UnexpectedStatusException on Failed/Stopped
            if type(exc).__name__ != "UnexpectedStatusException":
                raise
        description = sm_session.sagemaker_client.describe_training_job(TrainingJobName=name)
    except (BotoCoreError, ClientError) as exc:
        raise aws.aws_error(f"training job {name}", exc) from exc
    status = description.get("TrainingJobStatus")
    if status != "Completed":
        raise StageError(
            "train",
            f"SageMaker training job {name} ended {status}: {description.get('FailureReason', 'no reason given')}. "
            f"Logs: CloudWatch group /aws/sagemaker/TrainingJobs, stream {name}/algo-1-*",
        )
    image = description.get("AlgorithmSpecification", {}).get("TrainingImage")
    version, py_version = aws.framework_versions(config.framework, config.training)
    return {
        "platform": "sagemaker",
        "name": name,
        "run_id": context.run_id,
        "arn": description.get("TrainingJobArn"),
        "status": status,
        "region": settings.region,
        "bucket": settings.bucket,
        "prefix": settings.prefix,
        "role": settings.role,
        "image": image,
        "framework": config.framework,
        "framework_version": version,
        "py_version": py_version,
        "instance_type": config.training.instance_type,
        "instance_count": config.training.instance_count,
        "channels": channels,
        "output_path": settings.s3_uri("output"),
        "model_data": description["ModelArtifacts"]["S3ModelArtifacts"],
        "billable_seconds": description.get("BillableTimeInSeconds"),
        "final_metrics": final_metrics(description),
        "source_dir": str(source),
    }


def _metrics_record(s3: Any, model_data: str, scratch: Path) -> dict[str, Any]:
    """Rank 0's ``metrics.json`` from the job's ``output.tar.gz`` (empty if there is none)."""
    from botocore.exceptions import ClientError

    bucket, key = aws.s3_split(model_data.rsplit("/", 1)[0] + "/output.tar.gz")
    target = scratch / "output.tar.gz"
    try:
        s3.download_file(bucket, key, str(target))
    except ClientError:
        return {}
    with tarfile.open(target, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith("metrics.json") and ".." not in member.name:
                handle = tar.extractfile(member)
                if handle is not None:
                    return dict(json.load(handle))
    return {}


def run_training_job(context: TrainingContext) -> TrainingResult:
    """Run the use case's training as a SageMaker job; download and extract its model.

    Returns:
        A TrainingResult whose ``model_dir`` is the job's ``model.tar.gz`` extracted, with the job
        recorded in ``<run>/sagemaker.json`` and in ``facts["job"]``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from modelcycle.core.entrypoint import training_result
    from modelcycle.core.errors import StageError

    started = time.perf_counter()
    job = launch_training_job(context)
    output_dir = Path(context.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / JOB_RECORD).write_text(json.dumps(job, indent=2, default=str))
    session = aws.boto_session(job["region"])
    s3 = session.client("s3")
    with tempfile.TemporaryDirectory(prefix="modelcycle-sm-") as tmp:
        scratch = Path(tmp)
        archive = scratch / "model.tar.gz"
        bucket, key = aws.s3_split(job["model_data"])
        try:
            s3.download_file(bucket, key, str(archive))
        except ClientError as exc:
            raise StageError(
                "train",
                f"SageMaker training job {job['name']} completed but {job['model_data']} cannot be read "
                f"({exc.response.get('Error', {}).get('Code')}): the entry point must write the model into SM_MODEL_DIR",
            ) from exc
        except BotoCoreError as exc:
            raise aws.aws_error(f"downloading {job['model_data']}", exc) from exc
        if context.config.training.script_mode:
            from modelcycle.platforms.sagemaker.script import script_result

            result = script_result(context, archive, Path(job["source_dir"]), job["final_metrics"], job, started)
        else:
            record = _metrics_record(s3, job["model_data"], scratch)
            result = training_result(context, archive, record, time.perf_counter() - started, job)
    out = None if context.reporter.quiet else context.reporter.stream
    if out is not None:
        print(f"Training job {job['name']} completed; model artifact {job['model_data']}", file=out, flush=True)
    return result
