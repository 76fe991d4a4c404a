"""SageMaker batch transform and the S3 side of ``modelcycle transform``.

- :func:`fetch_input` downloads the ``.npy``/``.jsonl`` objects under an ``s3://bucket/prefix/``
  into a local folder (keys relative to the prefix), so the core scores them like a folder.
- :func:`store_output` uploads the finished output file to an ``s3://`` object.
- :func:`run_job` scores as a SageMaker Transformer job: the SageMaker model of the archive is
  created as ``deploy`` creates it (:func:`~modelcycle.platforms.sagemaker.endpoints.sagemaker_model`),
  a local folder of request files is uploaded under ``<prefix>/transform/<job>/input/``, then
  ``Transformer(...).transform(...)`` with ``AssembleWith: Line`` into
  ``<prefix>/transform/<job>/output/``, waited on. SageMaker's output contract: one
  ``<input key>.out`` per input object; with ``SplitType: Line`` each line of the input is one
  request (``SingleRecord``: one line per request) and its answer one line of the ``.out``; with
  ``SplitType: None`` the whole object is one request (``MaxPayloadInMB`` sized to the largest
  object, at most SageMaker's 100) and the ``.out`` its answer. The ``.out``
  objects are downloaded; the job's transient SageMaker model is deleted afterwards (the S3
  objects stay, they are the job's record).

Errors carry the action and the fix (:func:`~modelcycle.platforms.sagemaker.session.aws_error`
style): no credentials, a missing bucket, an empty prefix, a failed job with SageMaker's reason.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ConfigError, StageError
from modelcycle.core.transform_sources import SUFFIXES, TransformError
from modelcycle.platforms.sagemaker import session as aws

__all__ = ["fetch_input", "store_output", "run_job"]

_SCHEME = "s3://"
_MAX_PAYLOAD_MB = 100  # SageMaker's limit for one transform request


def _client(uri: str) -> Any:
    """An S3 client in ``MODELCYCLE_SAGEMAKER_REGION``, else boto3's configured region (S3
    redirects bucket operations to the bucket's own)."""
    import os

    return aws.boto_session(os.environ.get(aws.ENV_REGION) or None).client("s3")  # type: ignore[arg-type]


def _missing_bucket(exc: Any) -> bool:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code")) in ("NoSuchBucket", "404", "NotFound")


def _listing(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/")]
    return keys


def _relative(key: str, prefix: str) -> str:
    return key[len(prefix):].lstrip("/") if prefix else key


def fetch_input(uri: str, directory: Path) -> list[str] | None:
    """Download the ``.npy``/``.jsonl`` objects under ``uri`` into ``directory`` (hidden keys
    skipped); returns their names relative to the prefix, sorted; ``None`` for another scheme.

    Raises:
        TransformError: no ``.npy``/``.jsonl`` object under the prefix (the others are named).
        ConfigError: the bucket does not exist; no AWS credentials.
    """
    if not uri.startswith(_SCHEME):
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = aws.s3_split(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # a prefix names a folder: s3://b/data does not read s3://b/data2/...
    s3 = _client(uri)
    try:
        keys = _listing(s3, bucket, prefix)
        names = sorted(_relative(k, prefix) for k in keys)
        wanted = [n for n in names if n.lower().endswith(SUFFIXES)
                  and not any(part.startswith(".") for part in n.split("/"))]
        if not wanted:
            others = f" (it holds {len(names)} other object(s), e.g. {', '.join(names[:3])})" if names else ""
            raise TransformError(f"{uri} holds no .npy or .jsonl objects{others}: give the prefix the records are "
                                 "under (e.g. s3://bucket/records/)")
        for name in wanted:
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, prefix + name, str(target))
    except ClientError as exc:
        if _missing_bucket(exc):
            raise ConfigError(f"reading {uri}: S3 bucket '{bucket}' does not exist (or is not visible to these "
                              "credentials); check the bucket name of --input") from None
        raise aws.aws_error(f"reading {uri}", exc) from exc
    except BotoCoreError as exc:
        raise aws.aws_error(f"reading {uri}", exc) from exc
    return wanted


def store_output(path: Path, uri: str) -> str | None:
    """Upload ``path`` to the object ``uri``; ``None`` for another scheme.

    Raises:
        TransformError: ``uri`` names a prefix (ends with ``/``) rather than an object.
        ConfigError: the bucket does not exist; no AWS credentials.
    """
    if not uri.startswith(_SCHEME):
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = aws.s3_split(uri)
    if not key or key.endswith("/"):
        raise TransformError(f"--output {uri} names a prefix: give the object to write (e.g. {uri.rstrip('/')}/scores.jsonl)")
    from boto3.exceptions import S3UploadFailedError

    try:
        _client(uri).upload_file(str(path), bucket, key)
    except (ClientError, S3UploadFailedError) as exc:
        if _missing_bucket(exc) or "NoSuchBucket" in str(exc):
            raise ConfigError(f"writing {uri}: S3 bucket '{bucket}' does not exist; create it or write elsewhere") from None
        raise aws.aws_error(f"writing {uri}", exc) from exc
    except BotoCoreError as exc:
        raise aws.aws_error(f"writing {uri}", exc) from exc
    return uri


def _wait(client: Any, job_name: str, timeout_s: float) -> dict[str, Any]:
    """DescribeTransformJob until Completed; a Failed/Stopped job is an error with SageMaker's reason."""
    def settled(description: dict[str, Any]) -> bool:
        status = description["TransformJobStatus"]
        if status in ("Failed", "Stopped", "Stopping"):
            raise StageError("transform", f"SageMaker transform job {job_name} ended {status}: "
                             f"{description.get('FailureReason', 'no reason given')}. Its logs are in CloudWatch group "
                             "/aws/sagemaker/TransformJobs")
        return bool(status == "Completed")

    return aws.wait_until(
        lambda: client.describe_transform_job(TransformJobName=job_name), lambda d: d["TransformJobStatus"], settled,
        timeout_s, lambda d: StageError("transform", f"SageMaker transform job {job_name} still {d['TransformJobStatus']} "
                                        f"after {timeout_s:.0f} s (serving.deploy_timeout_s); it keeps running: stop it "
                                        "in the SageMaker console"),
        f"transform job {job_name}")


def _max_payload_mb(s3: Any, input_uri: str) -> int:
    """``MaxPayloadInMB`` for whole-object requests (``SplitType: None``): the largest object
    under ``input_uri`` rounded up, at least SageMaker's default 6.

    Raises:
        TransformError: an object above SageMaker's 100 MB request limit (named, with the fix).
    """
    bucket, prefix = aws.s3_split(input_uri)
    largest, largest_key = 0, ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Size"] > largest:
                largest, largest_key = item["Size"], item["Key"]
    megabytes = -(-largest // (1 << 20))
    if megabytes > _MAX_PAYLOAD_MB:
        raise TransformError(f"s3://{bucket}/{largest_key} is {megabytes} MB: a SageMaker transform request holds at "
                             f"most {_MAX_PAYLOAD_MB} MB and each .npy object is one request; split it into smaller "
                             "arrays, or score it in this process (--platform local)")
    return max(6, megabytes)


def _upload_folder(s3: Any, folder: Path, uri: str) -> int:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for file in files:
        aws.upload_file(s3, file, f"{uri.rstrip('/')}/{file.relative_to(folder).as_posix()}")
    return len(files)


def _download_outputs(s3: Any, output_uri: str, directory: Path) -> list[str]:
    bucket, prefix = aws.s3_split(output_uri.rstrip("/") + "/")
    names = []
    for key in _listing(s3, bucket, prefix):
        name = _relative(key, prefix)
        if not name.endswith(".out"):
            continue
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
        names.append(name)
    return sorted(names)


def run_job(name: str, model_dir: Path, settings_section: Any, work_dir: Path, input: str | Path,
            content_type: str, split_type: str | None, directory: Path) -> dict[str, Any]:
    """Score ``input`` (an ``s3://`` prefix, or a local folder of request files uploaded first)
    as a SageMaker Transformer job with the model of ``model_dir``; the ``.out`` objects land in
    ``directory`` (see the module doc and the ``run_transform_job`` hookspec).

    Raises:
        ConfigError: no role/region, a missing bucket, no credentials, a model SageMaker cannot serve.
        StageError: the job failed, or did not finish in ``serving.deploy_timeout_s``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from modelcycle.platforms.sagemaker import endpoints, rollout

    model_dir = Path(model_dir)
    manifest = endpoints._servable(model_dir)
    fallback = endpoints._fallback(model_dir, work_dir)
    settings = aws.resolve_settings(settings_section, manifest.use_case, fallback, role_key="serving.role")
    session = aws.boto_session(settings.region)
    settings = aws.resolve_bucket(settings, session)
    sm_session = aws.sagemaker_session(session, settings.bucket)
    client = sm_session.sagemaker_client
    s3 = session.client("s3")
    job_name = rollout.unique_name(endpoints.endpoint_name(f"{name}-transform"))
    output_uri = settings.s3_uri("transform", job_name, "output")
    model = None
    try:
        if isinstance(input, Path) or not str(input).startswith(_SCHEME):
            input_uri = settings.s3_uri("transform", job_name, "input") + "/"
            uploaded = _upload_folder(s3, Path(input), input_uri)
            print(f"uploaded {uploaded} request file(s) to {input_uri}", file=sys.stderr, flush=True)
        else:
            input_uri = str(input)
        max_payload = _max_payload_mb(s3, input_uri) if split_type is None else None
        with tempfile.TemporaryDirectory(prefix="modelcycle-sm-") as scratch:
            model = endpoints.sagemaker_model(
                model_dir, manifest, job_name, settings=settings, section=settings_section, session=session,
                sm_session=sm_session, requirements=fallback["requirements"], job=fallback["job"], scratch=Path(scratch),
            )
            model.create(instance_type=settings_section.instance_type)
        aws.import_sdk()
        from sagemaker.transformer import Transformer

        transformer = Transformer(
            model_name=model.name, instance_count=settings_section.instance_count,
            instance_type=settings_section.instance_type, strategy="SingleRecord", assemble_with="Line",
            output_path=output_uri, accept="application/json", max_payload=max_payload, sagemaker_session=sm_session,
        )
        print(f"Transforming {input_uri} with model {model.name} ({settings_section.instance_count} x "
              f"{settings_section.instance_type}) into {output_uri}", file=sys.stderr, flush=True)
        transformer.transform(data=input_uri, data_type="S3Prefix", content_type=content_type,
                              split_type=split_type, job_name=job_name, wait=False, logs=False)
        _wait(client, job_name, settings_section.deploy_timeout_s)
        outputs = _download_outputs(s3, output_uri, directory)
    except (BotoCoreError, ClientError) as exc:
        raise aws.aws_error(f"running transform job {job_name}", exc) from exc
    finally:
        if model is not None:
            try:
                client.delete_model(ModelName=model.name)
            except Exception:  # noqa: BLE001 - best effort; a leftover model costs nothing
                pass
    return {"job_name": job_name, "model_name": model.name, "input_uri": input_uri, "output_uri": output_uri,
            "outputs": outputs, "region": settings.region}
