"""AWS settings, sessions and S3 helpers of the SageMaker platform.

Nothing here imports boto3 or the sagemaker SDK at module level. Credentials are never read,
stored or printed by modelcycle: boto3's own chain (environment, shared profile, SSO, instance
role) supplies them. Every AWS client honours ``AWS_ENDPOINT_URL`` (and the per-service
``AWS_ENDPOINT_URL_S3``/``_SAGEMAKER``/``_STS``), which is how the tests point everything at a
moto server on loopback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ConfigError, ModelcycleError

__all__ = [
    "AwsSettings",
    "DEFAULT_VERSIONS",
    "aws_error",
    "boto_session",
    "framework_versions",
    "image_uri",
    "import_sdk",
    "object_exists",
    "resolve_bucket",
    "resolve_settings",
    "s3_split",
    "sagemaker_session",
    "upload_file",
]

ENV_ROLE = "MODELCYCLE_SAGEMAKER_ROLE"
ENV_BUCKET = "MODELCYCLE_SAGEMAKER_BUCKET"
ENV_REGION = "MODELCYCLE_SAGEMAKER_REGION"

#: Container versions used when the config names none: the newest SageMaker framework images
#: whose Python is >= 3.11 (modelcycle's floor), for training and inference alike.
DEFAULT_VERSIONS: dict[str, tuple[str, str]] = {
    "pytorch": ("2.6", "py312"),
    "lightning": ("2.6", "py312"),
    "keras": ("2.19", "py312"),
}
#: The SageMaker SDK framework name behind each modelcycle framework.
SDK_FRAMEWORK = {"pytorch": "pytorch", "lightning": "pytorch", "keras": "tensorflow"}


def tensorflow_serving_env(framework: str) -> dict[str, str]:
    """The TensorFlow container's environment for a built-in model of ``framework`` served by
    TensorFlow Serving (keras): its SavedModel's name (``model/1/`` → ``model``) pinned, since
    the container would otherwise take the first it finds; ``{}`` for other frameworks."""
    if SDK_FRAMEWORK.get(framework) != "tensorflow":
        return {}
    from modelcycle.core.serving.tfs import MODEL_NAME

    return {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": MODEL_NAME}


@dataclass(frozen=True)
class AwsSettings:
    """Where a use case's SageMaker resources live (no credentials)."""

    role: str
    region: str
    bucket: str | None
    prefix: str

    def s3_uri(self, *parts: str) -> str:
        """``s3://<bucket>/<prefix>/<parts...>`` (needs ``bucket``)."""
        assert self.bucket, "resolve the bucket first (resolve_bucket)"
        key = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return f"s3://{self.bucket}/{key}"


def aws_error(action: str, exc: BaseException) -> ModelcycleError:
    """Turn a botocore/SDK exception into a modelcycle error that names ``action`` (no secrets)."""
    from modelcycle.core.errors import StageError

    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError", "UnauthorizedSSOTokenError"):
        return ConfigError(
            f"{action}: no usable AWS credentials ({name}). Configure boto3's chain: AWS_PROFILE, "
            "~/.aws/credentials, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO or an instance role"
        )
    if name == "EndpointConnectionError":
        return StageError("aws", f"{action}: cannot reach AWS ({exc})")
    return StageError("aws", f"{action}: {name}: {exc}")


def _default_prefix(name: str) -> str:
    return f"modelcycle/{name}"


def resolve_settings(section: Any, name: str, fallback: Any = None, role_key: str = "training.role",
                     bucket_needed_for: str | None = None) -> AwsSettings:
    """Role, region, bucket and prefix from a config section, then ``fallback`` (another section
    or a mapping), then ``MODELCYCLE_SAGEMAKER_*``; the region last from boto3's configuration.
    ``bucket_needed_for`` (e.g. ``"pipeline export"``) makes a missing bucket an error too.

    Raises:
        ConfigError: one error naming *everything* missing (role, region and, when needed, the
            bucket), each with the key to set, so one fix-up round is enough.
    """

    def pick(key: str, env: str) -> str | None:
        value = getattr(section, key, None)
        if value is None and fallback is not None:
            value = fallback.get(key) if isinstance(fallback, dict) else getattr(fallback, key, None)
        return value or os.environ.get(env) or None

    section_name = role_key.rsplit(".", 1)[0]
    missing = []
    role = pick("role", ENV_ROLE)
    if not role:
        missing.append(
            f"{role_key} is not set: the IAM execution role SageMaker assumes (e.g. "
            f"arn:aws:iam::123456789012:role/SageMakerExecutionRole); set it in modelcycle.yaml, pass "
            f"--set {role_key}=ARN, or export {ENV_ROLE}"
        )
    region = pick("region", ENV_REGION) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        try:
            import boto3

            region = boto3.Session().region_name
        except Exception:  # pragma: no cover - boto3 missing is reported elsewhere
            region = None
    if not region:
        missing.append(f"{section_name}.region is not set: the AWS region; set it, or export {ENV_REGION} or AWS_DEFAULT_REGION")
    bucket = pick("bucket", ENV_BUCKET)
    if bucket_needed_for and not bucket:
        missing.append(
            f"{section_name}.bucket is not set: the S3 bucket by name ({bucket_needed_for} makes no AWS call to find "
            f"SageMaker's default one); set it, or export {ENV_BUCKET}"
        )
    if missing:
        raise ConfigError(missing[0] if len(missing) == 1 else
                          f"{len(missing)} settings are missing:\n" + "\n".join(f"  - {m}" for m in missing))
    prefix = (pick("prefix", "MODELCYCLE_SAGEMAKER_PREFIX") or _default_prefix(name)).strip("/")
    return AwsSettings(role=role, region=region, bucket=bucket, prefix=prefix)  # type: ignore[arg-type]


def boto_session(region: str) -> Any:
    """A boto3 session for ``region`` (credentials from boto3's own chain)."""
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - the extra is declared
        raise ConfigError("the sagemaker platform needs boto3: pip install 'modelcycle[sagemaker]'") from exc
    return boto3.Session(region_name=region)


def resolve_bucket(settings: AwsSettings, session: Any) -> AwsSettings:
    """``settings`` with its bucket: the configured one (it must exist), else SageMaker's default
    ``sagemaker-<region>-<account>``, created if missing (as the SDK does)."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = session.client("s3")
    try:
        if settings.bucket:
            try:
                s3.head_bucket(Bucket=settings.bucket)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code"))
                if code in ("404", "NoSuchBucket", "NotFound"):
                    raise ConfigError(
                        f"S3 bucket '{settings.bucket}' does not exist (training.bucket / {ENV_BUCKET}); "
                        "create it in the job's region or unset the key to use SageMaker's default bucket"
                    ) from None
                raise
            return settings
        account = session.client("sts").get_caller_identity()["Account"]
        bucket = f"sagemaker-{settings.region}-{account}"
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if settings.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
            s3.create_bucket(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise aws_error("resolving the S3 bucket", exc) from exc
    return AwsSettings(settings.role, settings.region, bucket, settings.prefix)


def import_sdk() -> Any:
    """Import the sagemaker SDK quietly: no 2.x deprecation notice (the 2.x line is deliberate)
    and no "Not applying SDK defaults" lines on stdout (unless the user set that logger up)."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    config_logger = logging.getLogger("sagemaker.config")
    if config_logger.level == logging.NOTSET:
        config_logger.setLevel(logging.WARNING)
    try:
        import sagemaker
    except ImportError as exc:  # pragma: no cover - the extra is declared
        raise ConfigError("the sagemaker platform needs the SDK: pip install 'modelcycle[sagemaker]'") from exc
    return sagemaker


def sagemaker_session(session: Any, bucket: str | None) -> Any:
    """A ``sagemaker.Session`` over ``session``. The bucket is always passed explicitly, so the
    SDK never derives its default bucket itself (that path calls the public STS endpoint)."""
    return import_sdk().Session(boto_session=session, default_bucket=bucket)


def framework_versions(framework: str, section: Any) -> tuple[str, str]:
    """``(framework_version, py_version)`` of the container for ``framework``."""
    if framework not in DEFAULT_VERSIONS:
        raise ConfigError(
            f"framework '{framework}' has no SageMaker container mapping; the sagemaker platform "
            f"runs {', '.join(sorted(DEFAULT_VERSIONS))}"
        )
    version, py = DEFAULT_VERSIONS[framework]
    return (getattr(section, "framework_version", None) or version, getattr(section, "py_version", None) or py)


def image_uri(framework: str, region: str, version: str, py_version: str, instance_type: str, scope: str) -> str:
    """The AWS deep-learning-container image for ``scope`` ``training`` or ``inference``
    (resolved offline from the SDK's bundled image tables)."""
    import_sdk()
    from sagemaker import image_uris

    try:
        return image_uris.retrieve(
            SDK_FRAMEWORK[framework], region=region, version=version, py_version=py_version,
            instance_type=instance_type, image_scope=scope,
        )
    except ValueError as exc:
        raise ConfigError(
            f"no SageMaker {SDK_FRAMEWORK[framework]} {scope} image for framework_version {version} / "
            f"py_version {py_version} in {region}: {exc}"
        ) from None


def s3_split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``."""
    match = re.match(r"^s3://([^/]+)/?(.*)$", uri)
    if not match:
        raise ValueError(f"not an S3 URI: {uri!r}")
    return match.group(1), match.group(2)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def upload_file(s3: Any, path: Path, uri: str) -> bool:
    """Upload ``path`` to ``uri`` unless an object with the same md5 (kept as object metadata) is
    already there; returns whether it uploaded."""
    from botocore.exceptions import ClientError

    bucket, key = s3_split(uri)
    md5 = _md5(path)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("Metadata", {}).get("modelcycle-md5") == md5:
            return False
    except ClientError:
        pass
    s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"modelcycle-md5": md5}})
    return True


def object_exists(s3: Any, uri: str) -> bool:
    from botocore.exceptions import ClientError

    bucket, key = s3_split(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


#: Seconds between two polls of a long-running SageMaker or Step Functions resource (then the last).
POLL_INTERVALS_S = (1, 2, 4, 8, 15, 30)


def wait_until(describe: Callable[[], dict[str, Any]], status: Callable[[dict[str, Any]], str],
               settled: Callable[[dict[str, Any]], bool], timeout_s: float | None,
               timed_out: Callable[[dict[str, Any]], Exception], what: str) -> dict[str, Any]:
    """Poll ``describe()`` (backing off over :data:`POLL_INTERVALS_S`) until ``settled`` says the
    description is final, and return it; each new ``status`` is printed as ``{what}: {status}``
    to stderr. ``settled`` raises to end with an error (a failed resource). After ``timeout_s``
    (``None``: no limit) the exception ``timed_out(description)`` is raised."""
    started, last = time.monotonic(), None
    for attempt in range(10_000_000):
        description = describe()
        if status(description) != last:
            last = status(description)
            print(f"{what}: {last}", file=sys.stderr, flush=True)
        if settled(description):
            return description
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise timed_out(description)
        time.sleep(POLL_INTERVALS_S[min(attempt, len(POLL_INTERVALS_S) - 1)])
    raise AssertionError("unreachable")  # pragma: no cover
