"""SageMaker real-time endpoints: model → endpoint config → endpoint, invoke, describe, delete.

The endpoint runs the artifact's ``code/inference.py`` in AWS's PyTorch inference container:
the same ``model_fn/input_fn/predict_fn/output_fn`` handlers the local endpoint runs, so a
request body that scores locally scores the same way there.

A built-in keras model is served in SageMaker's TensorFlow inference container (the image
``TensorFlowModel`` picks), by TensorFlow Serving from the SavedModel the keras plugin exports
under ``model/1/`` (TF Serving's ``<name>/<version>/saved_model.pb`` layout, served as model
``model``), with modelcycle's ``input_handler``/``output_handler`` as ``code/inference.py``
(:mod:`modelcycle.core.serving.tfs`). Chosen over running modelcycle's own four handlers because
that image has no handler dispatch for them: its Python service only calls
``input_handler(data, context)`` → TF Serving's REST predict → ``output_handler(response,
context)``, a documented contract a test replays against a loopback TF Serving REST emulator.
The handlers decode and encode with the local endpoint's codecs, so the same JSON/NPY requests
get the same responses; the container answers a handler's error with 500, so a client's mistake
carries its 4xx in the error text and :func:`invoke` reports that 4xx. A script-mode model
(``Manifest.script``) runs the user's own handlers instead (``serving.entry_point`` with the
model's ``code/`` as source dir) in the PyTorch or TensorFlow inference container.

Redeploying onto an in-service endpoint of the same name updates it blue/green (a new endpoint
config, ``UpdateEndpoint``, the old config deleted once the endpoint is InService on the new one:
:mod:`~modelcycle.platforms.sagemaker.rollout`); ``serving.variants`` split the traffic between
weighted production variants (canaries), each serving the deployed model or a tracked ``run``'s.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ConfigError, EndpointError
from modelcycle.platforms.sagemaker import capture as data_capture
from modelcycle.platforms.sagemaker import rollout
from modelcycle.platforms.sagemaker import session as aws

__all__ = ["deploy", "invoke", "describe", "delete", "predictor", "endpoint_name", "sagemaker_model"]



def endpoint_name(name: str) -> str:
    """A SageMaker-valid endpoint/model name (``[a-zA-Z0-9-]``, at most 63 characters)."""
    clean = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-")
    return re.sub(r"-{2,}", "-", clean)[:63].strip("-") or "modelcycle"


def _fallback(model_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Settings the serving section does not give: the use case's ``training:`` section, then the
    record of the SageMaker job that trained the model."""
    from modelcycle.platforms.sagemaker.training import JOB_RECORD

    merged: dict[str, Any] = {}
    record = model_dir.parent / JOB_RECORD
    job = json.loads(record.read_text()) if record.is_file() else {}
    training: Any = None
    try:
        from modelcycle.core.config import load_config

        training = load_config(Path(work_dir).parent).training
    except Exception:  # no or unreadable config beside work_dir: the job record still helps
        training = None
    for key in ("role", "region", "bucket", "prefix"):
        merged[key] = (getattr(training, key, None) if training is not None else None) or job.get(key)
    merged["job"] = job
    merged["requirements"] = getattr(training, "requirements", None) if training is not None else None
    return merged


def _serving_code(model_dir: Path, manifest: Any, requirements: list[str] | None, target: Path) -> Path:
    """The artifact's ``code/`` with a ``requirements.txt`` the inference container can install
    without any index having modelcycle: wheels of the running modelcycle and of the plugin
    distributions the manifest's providers name, shipped beside it and pinned without an extra
    (no torch or TensorFlow; the container has its own), then what the framework declares a
    serving container needs besides. ``requirements`` (``training.requirements``) replaces it.
    A built-in keras model's ``inference.py`` is TensorFlow Serving's handlers
    (:data:`modelcycle.core.serving.tfs.ENTRY_POINT`)."""
    from modelcycle.core.providers import MODELCYCLE, container_requirements, installed_framework_info
    from modelcycle.core.wheels import ship_wheels, wheel_requirements

    code = target / "code"
    shutil.copytree(model_dir / "code", code)
    if _tfs_env(manifest) is not None:  # keras: TF Serving's pre/post-processing handlers
        from modelcycle.core.serving.tfs import ENTRY_POINT

        (code / "inference.py").write_text(ENTRY_POINT)
    if requirements is None:
        info = installed_framework_info(manifest.framework)
        framework = manifest.providers.get("framework")
        lines = container_requirements(info, framework, manifest.modelcycle_version, training=False)
        distributions = [MODELCYCLE] + [provider.distribution for kind, provider in manifest.providers.items()
                                        if kind == "framework" or _installed(provider.distribution)]
        lines = wheel_requirements(ship_wheels(distributions, code), lines)
    else:
        lines = list(requirements)
    (code / "requirements.txt").write_text("\n".join(lines) + "\n")
    return code


def _installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed (a dataset plugin need not be where a model is served)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def _script_code(model_dir: Path, manifest: Any, scratch: Path) -> tuple[Path, str | None]:
    """The source dir and entry point of a script-mode model: its ``code/`` and the user's
    ``serving.entry_point``. TensorFlow Serving's container runs only ``code/inference.py``, so
    for keras a differently named entry point is served from a copy where it is ``inference.py``.

    Raises:
        ConfigError: a keras model whose ``code/`` holds both the entry point and another ``inference.py``.
    """
    code, entry_point = model_dir / "code", manifest.script.serving_entry_point
    if aws.SDK_FRAMEWORK[manifest.framework] != "tensorflow" or entry_point in (None, "inference.py"):
        return code, entry_point
    if (code / "inference.py").exists():
        raise ConfigError(
            f"serving.entry_point is {entry_point} but {code} also holds an inference.py: SageMaker's TensorFlow "
            "Serving container runs only code/inference.py; rename one of them"
        )
    copy = scratch / "code"
    shutil.copytree(code, copy)
    shutil.copyfile(code / entry_point, copy / "inference.py")
    return copy, "inference.py"


def _sdk_session(region: str) -> Any:
    """A cached SDK session per region and endpoint override (creating one builds ~8 clients)."""
    import os

    return _cached_session(region, os.environ.get("AWS_ENDPOINT_URL", ""), os.environ.get("AWS_PROFILE", ""))


@functools.lru_cache(maxsize=8)
def _cached_session(region: str, endpoint_url: str, profile: str) -> Any:
    return aws.sagemaker_session(aws.boto_session(region), None)


def _model_data(s3: Any, model_dir: Path, settings: aws.AwsSettings, job: dict[str, Any], run_id: str) -> str:
    """The S3 URI of the artifact: the training job's own ``model.tar.gz`` when the model was
    trained on SageMaker in this region, else the local archive uploaded under ``models/``."""
    if job.get("model_data") and job.get("region") == settings.region and aws.object_exists(s3, job["model_data"]):
        return str(job["model_data"])
    archive = model_dir.parent / "model.tar.gz"
    uri = settings.s3_uri("models", run_id, "model.tar.gz")
    if archive.is_file():
        aws.upload_file(s3, archive, uri)
        return uri
    from modelcycle.core.artifacts import package_directory

    with tempfile.TemporaryDirectory(prefix="modelcycle-sm-") as tmp:
        aws.upload_file(s3, package_directory(model_dir, Path(tmp) / "model.tar.gz"), uri)
    return uri


def _framework_model(framework: str, **kwargs: Any) -> Any:
    """``PyTorchModel`` (pytorch, lightning) or ``TensorFlowModel`` (keras; its image has no
    ``py_version``) with ``kwargs``; ``entry_point`` ``None`` leaves the container's default handlers."""
    if aws.SDK_FRAMEWORK[framework] == "tensorflow":
        from sagemaker.tensorflow import TensorFlowModel

        kwargs.pop("py_version", None)
        return TensorFlowModel(**kwargs)
    from sagemaker.pytorch import PyTorchModel

    return PyTorchModel(**kwargs)


def _wait_in_service(client: Any, name: str, timeout_s: float) -> dict[str, Any]:
    """The endpoint's description once it is InService.

    Raises:
        EndpointError: it failed (its CloudWatch group named) or is not in service after ``timeout_s``.
    """
    def settled(description: dict[str, Any]) -> bool:
        status = description["EndpointStatus"]
        if status in ("Failed", "OutOfService", "Deleting"):
            raise EndpointError(
                f"SageMaker endpoint {name} is {status}: {description.get('FailureReason', 'no reason given')}. "
                f"Its container logs are in CloudWatch group /aws/sagemaker/Endpoints/{name}; "
                "'modelcycle cleanup' removes the endpoint, its config and model"
            )
        return bool(status == "InService")

    return aws.wait_until(
        lambda: client.describe_endpoint(EndpointName=name), lambda d: d["EndpointStatus"], settled, timeout_s,
        lambda d: EndpointError(f"SageMaker endpoint {name} still {d['EndpointStatus']} after {timeout_s:.0f} s "
                                "(serving.deploy_timeout_s)"),
        f"endpoint {name}")


def _existing_endpoint(client: Any, name: str) -> dict[str, Any] | None:
    """The description of the endpoint ``name`` when it is InService (a redeploy updates it),
    ``None`` when there is none; any other status is an error (it is not ours to replace)."""
    from botocore.exceptions import ClientError

    try:
        existing = client.describe_endpoint(EndpointName=name)
    except ClientError:
        return None
    if existing["EndpointStatus"] != "InService":
        raise EndpointError(
            f"SageMaker endpoint {name} already exists ({existing['EndpointStatus']}); wait until it is InService "
            "to update it, or delete it first ('modelcycle cleanup', or the SageMaker console)"
        )
    return dict(existing)


def _delete_leftovers(client: Any, name: str) -> None:
    """Remove a model / endpoint config of ``name`` left by an interrupted deploy."""
    from botocore.exceptions import ClientError

    for call, kwargs in (
        (client.delete_endpoint_config, {"EndpointConfigName": name}),
        (client.delete_model, {"ModelName": name}),
    ):
        try:
            call(**kwargs)
        except ClientError:
            pass


def _servable(model_dir: Path) -> Any:
    """The manifest of ``model_dir`` when SageMaker has a container for it.

    Raises:
        ConfigError: a framework SageMaker cannot serve with these handlers; a built-in keras
            model without the TensorFlow Serving SavedModel (``model/1/``).
    """
    from modelcycle.core.artifacts import TFS_SAVED_MODEL, read_manifest

    manifest = read_manifest(model_dir)
    script = manifest.script is not None
    if script and manifest.framework not in aws.SDK_FRAMEWORK:
        raise ConfigError(f"a script-mode '{manifest.framework}' model has no SageMaker inference container "
                          f"(frameworks {', '.join(aws.SDK_FRAMEWORK)}); serve it locally (serving.platform: local)")
    if not script and manifest.framework not in aws.SDK_FRAMEWORK:
        raise ConfigError(
            f"serving a '{manifest.framework}' model on SageMaker is not supported yet: modelcycle's "
            "handlers run in the PyTorch inference container (frameworks pytorch, lightning) and keras "
            "models in TensorFlow Serving; serve it locally (serving.platform: local)"
        )
    tensorflow = aws.SDK_FRAMEWORK[manifest.framework] == "tensorflow"
    if not script and tensorflow and not (model_dir / TFS_SAVED_MODEL).is_file():
        raise ConfigError(
            f"{model_dir} has no TensorFlow Serving SavedModel ({TFS_SAVED_MODEL}), which SageMaker's "
            "TensorFlow container serves: retrain the use case with this modelcycle (modelcycle train --force)"
        )
    return manifest


def _tfs_env(manifest: Any) -> dict[str, str] | None:
    """The TensorFlow container's environment for a built-in keras model; ``None`` otherwise."""
    return None if manifest.script is not None else aws.tensorflow_serving_env(manifest.framework) or None


def sagemaker_model(model_dir: Path, manifest: Any, name: str, *, settings: aws.AwsSettings, section: Any,
                    session: Any, sm_session: Any, requirements: list[str] | None, job: dict[str, Any],
                    scratch: Path) -> Any:
    """The SDK model (``PyTorchModel``/``TensorFlowModel``, not yet created) named ``name`` that
    serves ``model_dir`` on SageMaker: the artifact uploaded (or the training job's own), its
    ``code/`` with self-contained requirements, or a script-mode model's own handlers. Shared by
    ``deploy`` and batch transform; ``scratch`` is a folder that outlives the model's creation."""
    scratch_dir = Path(scratch) / name
    scratch_dir.mkdir()
    if manifest.script is not None:  # the user's handlers and source dir, as the model directory's code/ holds them
        code, entry_point = _script_code(model_dir, manifest, scratch_dir)
    else:
        code, entry_point = _serving_code(model_dir, manifest, requirements, scratch_dir), "inference.py"
    data = _model_data(session.client("s3"), model_dir, settings, job, manifest.run_id)
    version, py_version = aws.framework_versions(manifest.framework, section)
    return _framework_model(
        manifest.framework,
        model_data=data,
        role=settings.role,
        entry_point=entry_point,
        source_dir=str(code),  # repacked into the archive's code/ by the SDK
        framework_version=version,
        py_version=py_version,
        sagemaker_session=sm_session,
        name=name,
        code_location=settings.s3_uri("models"),
        env=_tfs_env(manifest),
    )


def _run_model_dir(work_dir: Path, run: str) -> Path:
    """The model directory of the tracked run whose id starts with ``run`` (``serving.variants[].run``).

    Raises:
        ConfigError: no run, or several, match.
    """
    runs = sorted(d for d in (work_dir / "runs").glob("*") if (d / "model" / "modelcycle.json").is_file())
    matches = [d for d in runs if d.name.startswith(run)]
    if len(matches) != 1:
        known = ", ".join(d.name[:8] for d in runs) or "none"
        raise ConfigError(f"serving.variants: run '{run}' matches {len(matches)} trained runs with a model "
                          f"(runs: {known}); give a longer prefix of one of them ('modelcycle runs' lists them)")
    return matches[0] / "model"


def _roll_out(client: Any, name: str, existing: dict[str, Any] | None, model: Any, section: Any,
              build_run: Any, capture: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Create ``model`` (and one model per variant ``run``), an endpoint config of the weighted
    variants (capturing per ``capture``, a DataCaptureConfig), then the endpoint, or
    (``existing``) update it blue/green. Returns the endpoint's description and its model names."""
    model.create(instance_type=section.instance_type)
    models: dict[str | None, str] = {None: model.name}
    for run in sorted({v.run for v in section.variants if v.run}):
        other = build_run(run)
        other.create(instance_type=section.instance_type)
        models[run] = other.name
    variants = rollout.production_variants(section, models)
    if existing is not None:
        return (rollout.update(client, name, existing, variants, section.deploy_timeout_s, data_capture=capture),
                sorted(set(models.values())))
    config = rollout.create_config(client, name, variants, capture)
    client.create_endpoint(EndpointName=name, EndpointConfigName=config)
    return _wait_in_service(client, name, section.deploy_timeout_s), sorted(set(models.values()))


def deploy(name: str, model_dir: Path, settings_section: Any, work_dir: Path) -> dict[str, Any]:
    """Create model → endpoint config → endpoint for ``model_dir``; wait until InService.

    Returns:
        The endpoint record: ``name``, ``platform``, ``url``, ``status``, ``arn``,
        ``endpoint_config_name``, ``model_name`` (the deployed model's), ``model_names`` (every
        variant's), ``variants``, ``region``, ``model_data``, ``image``, ``data_capture``
        (``{"destination", "sampling_percentage"}`` of the live config, ``None`` without)...

    An endpoint of that name already InService is updated blue/green (:func:`rollout.update`):
    it serves throughout, and if the update fails it keeps serving its previous config.

    Raises:
        ConfigError: no role or region; a framework SageMaker cannot serve with these handlers.
        EndpointError: the endpoint failed or did not come up in ``deploy_timeout_s``; an update
            failed (the message says the previous config keeps serving).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    model_dir = Path(model_dir)
    manifest = _servable(model_dir)
    fallback = _fallback(model_dir, work_dir)
    settings = aws.resolve_settings(settings_section, manifest.use_case, fallback, role_key="serving.role")
    session = aws.boto_session(settings.region)
    settings = aws.resolve_bucket(settings, session)
    sm_name = endpoint_name(name)
    capture = data_capture.capture_config(settings_section.data_capture, settings)
    runs = {v.run: _run_model_dir(Path(work_dir), v.run) for v in settings_section.variants if v.run}
    run_manifests = {run: _servable(directory) for run, directory in runs.items()}  # refused before any AWS change
    sm_session = aws.sagemaker_session(session, settings.bucket)

    client = sm_session.sagemaker_client
    scratch = tempfile.TemporaryDirectory(prefix="modelcycle-sm-")
    try:
        existing = _existing_endpoint(client, sm_name)
        plain = existing is None and not settings_section.variants  # the SDK's deploy: all named sm_name
        model_name = sm_name if plain else rollout.unique_name(sm_name)

        def build(directory: Path, built: Any, job: dict[str, Any], name: str) -> Any:
            return sagemaker_model(directory, built, name, settings=settings, section=settings_section, session=session,
                                   sm_session=sm_session, requirements=fallback["requirements"], job=job,
                                   scratch=Path(scratch.name))

        model = build(model_dir, manifest, fallback["job"], model_name)
        model_data = model.model_data
        if existing is None:
            _delete_leftovers(client, sm_name)
        print(f"Deploying model: [{model_data}] as SageMaker endpoint {sm_name} "
              f"({settings_section.instance_count} x {settings_section.instance_type})", file=sys.stderr, flush=True)
        if plain:
            model.deploy(
                initial_instance_count=settings_section.instance_count,
                instance_type=settings_section.instance_type,
                endpoint_name=sm_name,
                wait=False,
                data_capture_config=data_capture.sdk_capture_config(capture, sm_session),
            )
            description = _wait_in_service(client, sm_name, settings_section.deploy_timeout_s)
            models = [sm_name]
        else:
            def build_run(run: str) -> Any:
                return build(runs[run], run_manifests[run], _fallback(runs[run], work_dir)["job"],
                             rollout.unique_name(f"{sm_name}-{run[:8]}"))

            description, models = _roll_out(client, sm_name, existing, model, settings_section, build_run, capture)
        container = client.describe_model(ModelName=model_name).get("PrimaryContainer", {})
        config = client.describe_endpoint_config(EndpointConfigName=description["EndpointConfigName"])
    except (BotoCoreError, ClientError) as exc:
        raise aws.aws_error(f"deploying endpoint {sm_name}", exc) from exc
    finally:
        scratch.cleanup()
    return {
        "name": sm_name,
        "platform": "sagemaker",
        "url": f"https://runtime.sagemaker.{settings.region}.amazonaws.com/endpoints/{sm_name}/invocations",
        "status": description["EndpointStatus"],
        "arn": description["EndpointArn"],
        "endpoint_config_name": description["EndpointConfigName"],
        "model_name": model_name,
        "model_names": models,
        "variants": [v["VariantName"] for v in config["ProductionVariants"]],
        "data_capture": data_capture.describe(config.get("DataCaptureConfig")),
        "region": settings.region,
        "instance_type": settings_section.instance_type,
        "instance_count": settings_section.instance_count,
        "image": container.get("Image"),
        "model_data": container.get("ModelDataUrl", model_data),
        "source_model_data": model_data,
    }


class _Raw:
    """A deserializer that keeps the body bytes and the response's content type."""

    def __init__(self, accept: str) -> None:
        self.ACCEPT = (accept,)

    def deserialize(self, stream: Any, content_type: str) -> tuple[bytes, str]:
        try:
            return stream.read(), content_type
        finally:
            stream.close()


def predictor(endpoint: dict[str, Any]) -> Any:
    """A ``sagemaker.predictor.Predictor`` for ``endpoint`` with JSON serializer/deserializer:
    ``predictor(endpoint).predict({"input_data": [{"values": images.tolist()}]})``."""
    aws.import_sdk()
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    return Predictor(endpoint["name"], sagemaker_session=_sdk_session(endpoint["region"]),
                     serializer=JSONSerializer(), deserializer=JSONDeserializer())


def invoke(endpoint: dict[str, Any], body: bytes, content_type: str, accept: str,
           inference_id: str | None = None) -> tuple[int, bytes, str]:
    """One InvokeEndpoint call through a Predictor (with ``InferenceId`` when given: Data Capture
    records it); errors come back as ``(status, JSON, type)``."""
    from botocore.exceptions import BotoCoreError, ClientError

    aws.import_sdk()
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    client = Predictor(
        endpoint["name"],
        sagemaker_session=_sdk_session(endpoint["region"]),
        serializer=IdentitySerializer(content_type=content_type),
        deserializer=_Raw(accept),
    )
    try:
        payload, returned_type = client.predict(body, inference_id=inference_id)
        return 200, payload, returned_type or accept
    except ClientError as exc:
        response = exc.response
        status = int(response.get("OriginalStatusCode") or response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500)
        error = response.get("Error", {})
        message = response.get("OriginalMessage") or error.get("Message") or str(exc)
        status, message = _client_error(status, message)
        return status, json.dumps({"error": message, "code": error.get("Code")}).encode(), "application/json"
    except BotoCoreError as exc:
        raise aws.aws_error(f"invoking endpoint {endpoint['name']}", exc) from exc


def _client_error(status: int, message: str) -> tuple[int, str]:
    """The 4xx and message of a client's mistake that TensorFlow Serving's container answered
    with 500 (``{"error": "client error 4xx: ..."}``, :mod:`modelcycle.core.serving.tfs`);
    ``(status, message)`` unchanged otherwise."""
    from modelcycle.core.serving.tfs import parse_client_error

    try:
        text = json.loads(message).get("error") if status == 500 else None
    except (ValueError, AttributeError):
        text = None
    parsed = parse_client_error(text) if isinstance(text, str) else None
    return parsed if parsed is not None else (status, message)


def _missing(exc: Any) -> bool:
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return "Could not find" in message or "does not exist" in message or "not found" in message.lower()


def describe(endpoint: dict[str, Any]) -> dict[str, Any]:
    """``endpoint`` with its live ``status`` (``NotFound`` once deleted)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = aws.boto_session(endpoint["region"]).client("sagemaker")
    try:
        description = client.describe_endpoint(EndpointName=endpoint["name"])
    except ClientError as exc:
        if _missing(exc):
            return {**endpoint, "status": "NotFound"}
        raise aws.aws_error(f"describing endpoint {endpoint['name']}", exc) from exc
    except BotoCoreError as exc:
        raise aws.aws_error(f"describing endpoint {endpoint['name']}", exc) from exc
    status = {**endpoint, "status": description["EndpointStatus"]}
    if description.get("FailureReason"):
        status["failure_reason"] = description["FailureReason"]
    return status


def delete(endpoint: dict[str, Any]) -> int:
    """Delete the endpoint, its endpoint config and its models; returns how many were removed."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = aws.boto_session(endpoint["region"]).client("sagemaker")
    name = endpoint["name"]
    removed = 0
    models = endpoint.get("model_names") or [endpoint.get("model_name", name)]
    for call, kwargs in (
        (client.delete_endpoint, {"EndpointName": name}),
        (client.delete_endpoint_config, {"EndpointConfigName": endpoint.get("endpoint_config_name", name)}),
        *((client.delete_model, {"ModelName": model}) for model in models),
    ):
        try:
            call(**kwargs)
            removed += 1
        except ClientError as exc:
            if not _missing(exc):
                raise aws.aws_error(f"deleting {kwargs}", exc) from exc
        except BotoCoreError as exc:
            raise aws.aws_error(f"deleting {kwargs}", exc) from exc
    return removed
