"""The SageMaker platform end to end against a real moto server on 127.0.0.1.

moto answers the S3, STS, SageMaker and SageMaker-runtime APIs but runs no training job: its jobs
are "Completed" at once and write no artifact. The server here wraps moto's WSGI app with a fake
SageMaker *training service*: on CreateTrainingJob it runs the job for real on local hosts with
modelcycle's container runner — from what the request names in S3 (``sourcedir.tar.gz``, the
channels, the hyperparameters, the instance count and environment) — and uploads the
``model.tar.gz`` to the job's output path; DescribeTrainingJob says ``InProgress`` until then.
Endpoint invocations return results seeded through moto's ``/moto-api/static/sagemaker/
endpoint-results``. A guard refuses every socket to anything but loopback, so no test reaches
the internet; the server is stopped in a ``finally``.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sagemaker")
pytest.importorskip("moto")

from conftest import SMALL, write_use_case  # noqa: E402

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
BUCKET = "modelcycle-test-bucket"
SECRET = "modelcycle-test-secret-Zq7"  # must never appear in any output or file
TRAIN_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6-cpu-py312"
INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6-cpu-py312"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def aws_json_request(environ: dict[str, Any], service: str) -> tuple[str, dict[str, Any]] | None:
    """``(action, request)`` of an AWS JSON-protocol call to ``service`` (``X-Amz-Target:
    <service>.<action>``) in a WSGI ``environ``, its body left readable for the app behind;
    ``None`` for any other request."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if not target.startswith(service + "."):
        return None
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    return target.split(".", 1)[1], json.loads(body or b"{}")


class FakeTrainingService:
    """WSGI middleware over moto: runs each created training job on local hosts."""

    def __init__(self, app: Any, work_dir: Path) -> None:
        self.app = app
        self.work_dir = work_dir
        self.url = ""
        self.requests: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.threads: list[threading.Thread] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.endswith((".CreateTrainingJob", ".DescribeTrainingJob")):
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        request = json.loads(body or b"{}")
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None

        payload = b"".join(self.app(environ, capture))
        ok = captured["status"].startswith("200")
        name = request.get("TrainingJobName", "")
        if target.endswith(".CreateTrainingJob") and ok:
            self.requests[name] = request
            self.jobs[name] = {"status": "InProgress"}
            thread = threading.Thread(target=self._run, args=(request,), daemon=True)
            self.threads.append(thread)
            thread.start()
        elif ok and name in self.jobs:
            job = self.jobs[name]
            document = json.loads(payload)
            document["TrainingJobStatus"] = job["status"]
            document["SecondaryStatus"] = {"InProgress": "Training"}.get(job["status"], job["status"])
            if job["status"] == "Failed":
                document["FailureReason"] = job.get("reason", "")
            if job["status"] == "Completed" and job.get("metrics") is not None:
                document["FinalMetricDataList"] = job["metrics"]
            payload = json.dumps(document, default=str).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers + [("Content-Length", str(len(payload)))])
        return [payload]

    def _s3(self) -> Any:
        import boto3

        return boto3.client("s3", region_name=REGION, endpoint_url=self.url)

    def _run(self, request: dict[str, Any]) -> None:
        from modelcycle.platforms.local.container import JobSpec, run_job
        from modelcycle.platforms.sagemaker.session import s3_split

        name = request["TrainingJobName"]
        try:
            s3 = self._s3()
            root = self.work_dir / name
            hps = {k: json.loads(v) for k, v in request["HyperParameters"].items()}
            source = root / "source"
            source.mkdir(parents=True)
            bucket, key = s3_split(hps["sagemaker_submit_directory"])
            with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
                tar.extractall(source, filter="data")
            channels: dict[str, list[Path]] = {}
            for channel in request["InputDataConfig"]:
                bucket, prefix = s3_split(channel["DataSource"]["S3DataSource"]["S3Uri"])
                directory = root / "data" / channel["ChannelName"]
                directory.mkdir(parents=True)
                files = []
                for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                    path = directory / item["Key"].rsplit("/", 1)[-1]
                    s3.download_file(bucket, item["Key"], str(path))
                    files.append(path)
                channels[channel["ChannelName"]] = files
            outcome = run_job(JobSpec(
                name=name,
                job_dir=root / "job",
                source_dir=source,
                channels=channels,
                hyperparameters={k: v for k, v in hps.items() if not k.startswith("sagemaker_")},
                entry_point=hps["sagemaker_program"],
                instance_count=request["ResourceConfig"]["InstanceCount"],
                instance_type=request["ResourceConfig"]["InstanceType"],
                environment=dict(request.get("Environment") or {}),
            ))
            bucket, key = s3_split(f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output")
            s3.upload_file(str(outcome.model_archive), bucket, f"{key}/model.tar.gz")
            if outcome.output_archive is not None:
                s3.upload_file(str(outcome.output_archive), bucket, f"{key}/output.tar.gz")
            self.jobs[name] = {"status": "Completed", "outcome": outcome, "metrics": _final_metrics(request, outcome)}
        except Exception as exc:  # reported through DescribeTrainingJob, as SageMaker does
            self.jobs[name] = {"status": "Failed", "reason": f"{type(exc).__name__}: {exc}"[:1000]}


def _final_metrics(request: dict[str, Any], outcome: Any) -> list[dict[str, Any]] | None:
    """SageMaker's FinalMetricDataList: the last value each MetricDefinitions regex finds in the
    lead host's output (``None``: the job defined no metrics, moto's default answer stays)."""
    import re

    definitions = request["AlgorithmSpecification"].get("MetricDefinitions")
    if not definitions:
        return None
    log = (outcome.job_dir / "logs" / f"{outcome.hosts[0]}.log").read_text(errors="replace")
    found = []
    for definition in definitions:
        matches = re.findall(definition["Regex"], log)
        if matches:
            value = matches[-1][0] if isinstance(matches[-1], tuple) else matches[-1]
            found.append({"MetricName": definition["Name"], "Value": float(value), "Timestamp": 0})
    return found


@pytest.fixture
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTrainingService]:
    """moto on 127.0.0.1 (free port) behind the fake training service; stopped afterwards."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    service = FakeTrainingService(DomainDispatcherApplication(create_backend_app), tmp_path_factory.mktemp("sm-jobs"))
    server = make_server("127.0.0.1", 0, service, threaded=True, request_handler=MotoRequestHandler)
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        urllib.request.urlopen(urllib.request.Request(service.url + "/moto-api/reset", method="POST")).read()
        yield service
    finally:
        for job in service.threads:
            job.join(timeout=120)
        try:
            urllib.request.urlopen(urllib.request.Request(service.url + "/moto-api/reset", method="POST")).read()
        finally:
            server.shutdown()
            thread.join(timeout=10)


@pytest.fixture
def no_internet(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record) every name lookup or connection that is not loopback."""
    attempts: list[Any] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in _LOOPBACK:
            attempts.append(address)
            raise OSError(f"test guard: no connections beyond loopback ({address})")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in _LOOPBACK and host is not None:
            attempts.append(host)
            raise socket.gaierror(f"test guard: no name lookups beyond loopback ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


@pytest.fixture
def aws(moto_server: FakeTrainingService, no_internet: list[Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTrainingService]:
    """Every boto3 client in this process aimed at the moto server; SDK telemetry off."""
    from modelcycle.platforms.sagemaker.session import import_sdk

    import_sdk()
    import sagemaker.telemetry.telemetry_logging as telemetry

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    monkeypatch.setattr(telemetry, "_send_telemetry_request", lambda *args, **kwargs: None)
    import boto3

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    yield moto_server
    assert no_internet == [], f"something tried to leave loopback: {no_internet}"


def _sagemaker() -> Any:
    import boto3

    return boto3.client("sagemaker", region_name=REGION)


def _seed(url: str, body: bytes, content_type: str = "application/json") -> None:
    document = {"region": REGION, "results": [{"Body": body.decode(), "ContentType": content_type}]}
    request = urllib.request.Request(
        url + "/moto-api/static/sagemaker/endpoint-results", data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    urllib.request.urlopen(request).read()


def _assert_nothing_left() -> None:
    client = _sagemaker()
    assert client.list_endpoints()["Endpoints"] == []
    assert client.list_endpoint_configs()["EndpointConfigs"] == []
    assert client.list_models()["Models"] == []


def test_train_deploy_score_cleanup_through_the_use_case(
    aws: FakeTrainingService, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import boto3
    import orjson

    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.serving.pipeline import InferencePipeline

    directory = write_use_case(
        tmp_path / "uc", name="sm-mnist", **SMALL,
        training={"platform": "sagemaker", "role": ROLE, "bucket": BUCKET, "instance_type": "ml.c5.xlarge",
                  "instance_count": 2, "backend": "gloo"},
        serving={"platform": "sagemaker", "instance_type": "ml.m5.large"},
    )
    use_case = UseCase(directory)
    outputs = use_case.train()
    run_id = outputs["run_id"]

    # the CreateTrainingJob request, as SageMaker received it
    record = json.loads((Path(outputs["model_dir"]).parent / "sagemaker.json").read_text())
    job = record["name"]
    assert job == f"sm-mnist-{run_id[:12]}"
    described = _sagemaker().describe_training_job(TrainingJobName=job)
    assert described["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    assert described["RoleArn"] == ROLE
    assert described["ResourceConfig"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30}
    prefix = f"s3://{BUCKET}/modelcycle/sm-mnist"
    assert described["OutputDataConfig"]["S3OutputPath"] == f"{prefix}/output"
    hps = described["HyperParameters"]
    assert {k: hps[k] for k in ("epochs", "batch-size", "learning-rate", "backend", "sagemaker_program")} == {
        "epochs": "1", "batch-size": "64", "learning-rate": "0.005", "backend": '"gloo"', "sagemaker_program": '"train.py"',
    }
    assert json.loads(hps["sagemaker_submit_directory"]) == f"{prefix}/code/{job}/source/sourcedir.tar.gz"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in described["InputDataConfig"]}
    assert channels == {"training": f"{prefix}/data/mnist/training/", "testing": f"{prefix}/data/mnist/testing/"}
    assert aws.requests[job]["Environment"] == {"MODELCYCLE_RUN_ID": run_id}
    s3 = boto3.client("s3", region_name=REGION)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="modelcycle/sm-mnist/data/")["Contents"]}
    assert keys == {
        "modelcycle/sm-mnist/data/mnist/training/train-images-idx3-ubyte.gz",
        "modelcycle/sm-mnist/data/mnist/training/train-labels-idx1-ubyte.gz",
        "modelcycle/sm-mnist/data/mnist/testing/t10k-images-idx3-ubyte.gz",
        "modelcycle/sm-mnist/data/mnist/testing/t10k-labels-idx1-ubyte.gz",
    }

    # the job's artifact, fetched into the run
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == record["model_data"] == f"{prefix}/output/{job}/output/model.tar.gz"
    assert aws.jobs[job]["outcome"].hosts == ["algo-1", "algo-2"]
    assert outputs["metrics"]["test_accuracy"] > 0.3
    pipeline = InferencePipeline(outputs["model_dir"])
    assert pipeline.manifest.run_id == run_id

    # deploy: model → endpoint config → endpoint
    endpoint = use_case.deploy()
    assert endpoint["platform"] == "sagemaker" and endpoint["status"] == "InService"
    assert endpoint["arn"].endswith(f":endpoint/{endpoint['name']}")
    model = _sagemaker().describe_model(ModelName=endpoint["model_name"])["PrimaryContainer"]
    assert model["Image"] == INFERENCE_IMAGE
    assert model["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert model["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    bucket, key = model["ModelDataUrl"][len("s3://"):].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        assert {"model.pth", "modelcycle.json", "code/inference.py", "code/modelcycle-0.1.0-py3-none-any.whl"} <= set(tar.getnames())
        requirements = tar.extractfile("code/requirements.txt").read().decode().splitlines()  # type: ignore[union-attr]
    # the shipped wheel, no extra pinning another torch
    assert requirements == [f"modelcycle=={pipeline.manifest.modelcycle_version}", "--find-links ."]
    config = _sagemaker().describe_endpoint_config(EndpointConfigName=endpoint["endpoint_config_name"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    assert use_case.status()["deployed"] is True

    # score: the same JSON payload as locally, through a Predictor; moto returns what we seed —
    # here exactly what the model's own handlers answer for that payload
    test = load_dataset("mnist").test.take(5)
    body = orjson.dumps({"input_data": [{"values": test.images}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    expected, _ = pipeline.encode(pipeline.predict(pipeline.decode(body, "application/json")), "application/json")
    _seed(aws.url, expected)
    result = use_case.score(samples=5)
    # plus the InferenceId it was sent with (Data Capture records it) as its scoring_id, as a local answer has one
    assert {k: v for k, v in result.response.items() if k not in ("scoring_id", "scoring_ids")} == json.loads(expected)
    assert result.response["scoring_ids"] == [f"{result.response['scoring_id']}-{i}" for i in range(5)]
    assert result.predictions == [int(v[0]) for v in json.loads(expected)["predictions"][0]["values"]]
    assert result.labels == [int(x) for x in test.labels]

    # cleanup: endpoint, endpoint config and model, nothing left
    removed = use_case.cleanup()
    assert removed["serving"] == 3
    _assert_nothing_left()
    assert use_case.endpoint() is None

    # no credential ever reached output or disk
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    for path in directory.rglob("*"):
        if path.is_file() and path.stat().st_size < 2_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_locally_trained_model_deploys_and_is_deleted(aws: FakeTrainingService, trained_model_dir: Path, tmp_path: Path) -> None:
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.config import ServingConfig
    from modelcycle.platforms.sagemaker import endpoints

    settings = ServingConfig(platform="sagemaker", role=ROLE, bucket=BUCKET)
    record = endpoints.deploy("trained.mnist_1", trained_model_dir, settings, tmp_path / ".modelcycle")
    assert record["name"] == "trained-mnist-1"
    run_id = read_manifest(trained_model_dir).run_id
    assert record["source_model_data"] == f"s3://{BUCKET}/modelcycle/trained-mnist/models/{run_id}/model.tar.gz"
    assert endpoints.describe(record)["status"] == "InService"
    status, body, content_type = endpoints.invoke(record, b'{"instances": [[0]]}', "application/json", "application/json")
    assert status == 200 and body == b"body"  # moto's answer when nothing is seeded
    assert endpoints.delete(record) == 3
    assert endpoints.delete(record) == 0
    assert endpoints.describe(record)["status"] == "NotFound"
    _assert_nothing_left()


def test_a_missing_role_is_a_config_error_naming_the_key(no_internet: list[Any], small_use_case: Path) -> None:
    from modelcycle.core.errors import ConfigError
    from modelcycle.core.lifecycle import UseCase

    use_case = UseCase(small_use_case, overrides={"training.platform": "sagemaker"})
    with pytest.raises(ConfigError, match=r"training\.role is not set.*MODELCYCLE_SAGEMAKER_ROLE"):
        use_case.train()
    assert no_internet == []
    assert use_case.state().stage("train").status == "failed"


def test_role_and_bucket_come_from_the_environment_and_a_missing_bucket_is_named(
    aws: FakeTrainingService, small_use_case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcycle.core.config import load_config
    from modelcycle.core.errors import ConfigError
    from modelcycle.platforms.sagemaker import session

    monkeypatch.setenv("MODELCYCLE_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("MODELCYCLE_SAGEMAKER_BUCKET", "no-such-bucket")
    config = load_config(small_use_case)
    settings = session.resolve_settings(config.training, config.name)
    assert (settings.role, settings.bucket, settings.region, settings.prefix) == (
        ROLE, "no-such-bucket", REGION, "modelcycle/small-mnist")
    with pytest.raises(ConfigError, match=r"no-such-bucket.*does not exist.*training\.bucket"):
        session.resolve_bucket(settings, session.boto_session(REGION))
    monkeypatch.delenv("MODELCYCLE_SAGEMAKER_BUCKET")
    default = session.resolve_bucket(session.resolve_settings(config.training, config.name), session.boto_session(REGION))
    assert default.bucket == "sagemaker-us-east-1-123456789012"  # SageMaker's default, created


def test_a_failed_job_reports_sagemakers_failure_reason(
    aws: FakeTrainingService, small_use_case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcycle.core.errors import StageError
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.platforms.local import container

    original = container.run_job

    def bad_hyperparameter(spec: Any, stream: Any = None) -> Any:  # as if the job were started with epochs 0
        spec.hyperparameters["epochs"] = 0
        return original(spec, stream)

    monkeypatch.setattr(container, "run_job", bad_hyperparameter)
    use_case = UseCase(small_use_case, overrides={
        "training.platform": "sagemaker", "training.role": ROLE, "training.bucket": BUCKET, "training.logs": False,
    })
    with pytest.raises(StageError, match=r"ended Failed: .*hyperparameters\.epochs"):
        use_case.train()


def test_pipeline_export_upload_puts_what_the_definition_reads(aws: FakeTrainingService, small_use_case: Path) -> None:
    import boto3

    from modelcycle.core.config import load_config
    from modelcycle.platforms.sagemaker import pipeline

    config = load_config(small_use_case, {"training.role": ROLE, "training.bucket": BUCKET})
    definition = pipeline.state_machine(config)
    uploaded = pipeline.upload_inputs(config)
    train = definition["States"]["Train"]["Parameters"]
    assert json.loads(train["HyperParameters"]["sagemaker_submit_directory"]) == uploaded["source"]
    s3 = boto3.client("s3", region_name=REGION)
    bucket, key = uploaded["source"][len("s3://"):].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        assert sorted(tar.getnames()) == ["modelcycle-0.1.0-py3-none-any.whl", "modelcycle.yaml", "requirements.txt", "train.py"]
    for channel in train["InputDataConfig"]:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = uri[len("s3://"):].split("/", 1)
        assert len(s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]) == 2


def test_keras_trains_with_the_tensorflow_estimator_and_no_s3_model_dir(aws: FakeTrainingService, tmp_path: Path) -> None:
    from modelcycle.core.config import UseCaseConfig
    from modelcycle.platforms.sagemaker import session
    from modelcycle.platforms.sagemaker.training import _estimator

    config = UseCaseConfig.model_validate({"name": "keras-uc", "framework": "keras",
                                           "training": {"platform": "sagemaker", "role": ROLE, "bucket": BUCKET}})
    settings = session.resolve_settings(config.training, config.name)
    estimator = _estimator(config, settings, session.sagemaker_session(session.boto_session(REGION), BUCKET), tmp_path, "r1")
    assert type(estimator).__name__ == "TensorFlow"
    assert estimator.training_image_uri() == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.19-cpu-py312"
    assert "model_dir" not in estimator.hyperparameters()  # no s3:// --model_dir handed to the entry point
    assert estimator.hyperparameters()["epochs"] == "2"
