"""``modelcycle transform`` with SageMaker: a Transformer job (``--platform sagemaker`` /
``serving.platform: sagemaker``) and inputs/outputs under ``s3://``, against a moto server on 127.0.0.1.

moto accepts CreateTransformJob but runs nothing (the job is "Completed" at once).
:class:`FakeTransformService` plays SageMaker's batch transform in front of it, following its
output contract: for every object under the job's input prefix it writes ``<key>.out`` under the
output path, with ``SplitType: Line`` one answer line per input line, with ``SplitType: None``
one answer for the whole object. The answers come from modelcycle's own SageMaker handlers
(``sagemaker_handlers()``: ``model_fn`` on the archive that CreateModel named, downloaded from S3,
then ``input_fn``/``predict_fn``/``output_fn`` per request), i.e. what the inference container
would run. Every SageMaker request is recorded in order.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sagemaker")
pytest.importorskip("moto")

from conftest import mark_trained, write_use_case  # noqa: E402
from test_sagemaker_platform import (  # noqa: E402,F401 - the fixtures are used by name
    aws_json_request,
    BUCKET,
    INFERENCE_IMAGE,
    REGION,
    ROLE,
    aws,
    moto_server,
    no_internet,
)

SAGEMAKER = {"platform": "sagemaker", "role": ROLE, "bucket": BUCKET, "instance_type": "ml.m5.large",
             "instance_count": 2}


class FakeTransformService:
    """WSGI middleware over moto: records SageMaker requests and runs each CreateTransformJob
    (see the module doc) before answering it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.models: dict[str, dict[str, Any]] = {}
        self.fail_with: str | None = None  # the next job fails with this FailureReason
        self._failed: dict[str, str] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        call = aws_json_request(environ, "SageMaker")
        if call is None:
            return self.app(environ, start_response)
        action, request = call
        self.log.append((action, request))
        if action == "CreateModel":
            self.models[request["ModelName"]] = request
        if action == "CreateTransformJob":
            if self.fail_with is not None:
                self._failed[request["TransformJobName"]], self.fail_with = self.fail_with, None
            else:
                self._run(request)
        if action == "DescribeTransformJob" and request["TransformJobName"] in self._failed:
            return self._failed_answer(environ, start_response, self._failed[request["TransformJobName"]])
        return self.app(environ, start_response)

    def _failed_answer(self, environ: dict[str, Any], start_response: Any, reason: str) -> list[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None

        document = json.loads(b"".join(self.app(environ, capture)))
        document.update(TransformJobStatus="Failed", FailureReason=reason)
        payload = json.dumps(document, default=str).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers + [("Content-Length", str(len(payload)))])
        return [payload]

    def requests(self, action: str) -> list[dict[str, Any]]:
        return [request for name, request in self.log if name == action]

    def _run(self, request: dict[str, Any]) -> None:
        import boto3

        from modelcycle.core.serving.pipeline import sagemaker_handlers
        from modelcycle.platforms.sagemaker.session import s3_split

        s3 = boto3.client("s3", region_name=REGION)
        model = self.models[request["ModelName"]]["PrimaryContainer"]
        with tempfile.TemporaryDirectory() as tmp:
            bucket, key = s3_split(model["ModelDataUrl"])
            with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
                tar.extractall(tmp, filter="data")
            model_fn, input_fn, predict_fn, output_fn = sagemaker_handlers()
            loaded = model_fn(tmp)
        source = request["TransformInput"]
        content_type, split = source["ContentType"], source.get("SplitType", "None")

        def answer(body: bytes) -> bytes:
            data = input_fn(body.decode() if "json" in content_type else body, content_type)
            answered, _ = output_fn(predict_fn(data, loaded), request["TransformOutput"]["Accept"])
            return bytes(answered)

        bucket, prefix = s3_split(source["DataSource"]["S3DataSource"]["S3Uri"])
        out_bucket, out_prefix = s3_split(request["TransformOutput"]["S3OutputPath"].rstrip("/") + "/")
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if split == "Line":
                answers = [answer(line) for line in body.splitlines() if line.strip()]
            else:
                answers = [answer(body)]
            s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}{item['Key'][len(prefix):].lstrip('/')}.out",
                          Body=b"\n".join(answers) + b"\n")


@pytest.fixture
def service(aws: Any) -> FakeTransformService:
    fake = FakeTransformService(aws.app)
    aws.app = fake
    return fake


@pytest.fixture
def use_case_dir(tmp_path: Path, trained_model_dir: Path) -> Path:
    directory = write_use_case(tmp_path / "uc", name="sm-transform", serving=SAGEMAKER,
                               data={"dataset": "mnist"})
    mark_trained(directory, trained_model_dir)
    return directory


@pytest.fixture
def folder(tmp_path: Path, data_dir: Path) -> Path:
    from modelcycle.core.datasets import load_dataset

    images = load_dataset("mnist", data_dir / "mnist").test.take(10).images
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "a.npy", images[:5])
    np.save(folder / "b.npy", images[5].astype(np.float32))  # one record
    with (folder / "sub" / "c.jsonl").open("w") as handle:
        handle.write(json.dumps({"input_data": [{"values": images[6:7].tolist()}]}) + "\n")
        handle.write("\n")
        handle.write(json.dumps({"instances": images[7:9].reshape(2, 784).tolist()}) + "\n")
        handle.write(json.dumps(images[9].tolist()) + "\n")
    return folder


def _lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def _assert_same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Line for line the same record: everything but the scoring id equal, probabilities to float32 rounding."""
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        assert mine["scoring_id"] and theirs["scoring_id"]
        mine, theirs = {k: v for k, v in mine.items() if k != "scoring_id"}, {k: v for k, v in theirs.items() if k != "scoring_id"}
        (row,), (their_row,) = mine["predictions"][0].pop("values"), theirs["predictions"][0].pop("values")
        assert mine == theirs
        assert row[0] == their_row[0]  # the predicted class
        np.testing.assert_allclose(row[-1], their_row[-1], atol=1e-5)


def _s3() -> Any:
    import boto3

    return boto3.client("s3", region_name=REGION)


def test_a_folder_and_a_split_run_as_transform_jobs_as_the_local_transform_scores_them(
    service: FakeTransformService, use_case_dir: Path, folder: Path, tmp_path: Path
) -> None:
    from modelcycle.core.lifecycle import UseCase

    use_case = UseCase(use_case_dir)
    local = use_case.transform(tmp_path / "local.jsonl", input=folder, platform="local")
    result = use_case.transform(tmp_path / "job.jsonl", input=folder)  # serving.platform: sagemaker

    job = result["job"]
    name = job["job_name"]
    assert result["platform"] == "sagemaker" and name.startswith("sm-transform-transform-")
    prefix = f"s3://{BUCKET}/modelcycle/trained-mnist/transform/{name}"  # the model's use case, as deploy names it
    (create,) = service.requests("CreateTransformJob")
    assert create["TransformJobName"] == name
    assert create["ModelName"] == job["model_name"]
    assert create["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{prefix}/input/"}},
        "ContentType": "application/json", "SplitType": "Line"}
    assert create["TransformOutput"] == {"S3OutputPath": f"{prefix}/output", "Accept": "application/json",
                                         "AssembleWith": "Line"}
    assert create["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 2}
    assert create["BatchStrategy"] == "SingleRecord"
    (model,) = service.requests("CreateModel")
    assert model["ModelName"] == job["model_name"] and model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["Image"] == INFERENCE_IMAGE
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    # the request files: each source as JSON Lines of request bodies (a .jsonl source as it is)
    keys = sorted(o["Key"] for o in _s3().list_objects_v2(Bucket=BUCKET, Prefix=f"modelcycle/trained-mnist/transform/{name}/")["Contents"])
    base = f"modelcycle/trained-mnist/transform/{name}"
    assert keys == [f"{base}/input/a.npy.jsonl", f"{base}/input/b.npy.jsonl", f"{base}/input/sub/c.jsonl",
                    f"{base}/output/a.npy.jsonl.out", f"{base}/output/b.npy.jsonl.out", f"{base}/output/sub/c.jsonl.out"]
    # the job's transient model is gone; its S3 objects stay
    import boto3

    assert boto3.client("sagemaker", region_name=REGION).list_models()["Models"] == []

    assert result["records"] == local["records"] == 10 and result["sources"] == local["sources"]
    _assert_same_records(_lines((tmp_path / "job.jsonl").read_bytes()), _lines((tmp_path / "local.jsonl").read_bytes()))

    # a data set split (all 10,000 MNIST test images: transform scores the whole split), through
    # --platform sagemaker given explicitly
    split_local = use_case.transform(tmp_path / "split-local.jsonl", split="test", platform="local")
    split_job = use_case.transform(tmp_path / "split-job.jsonl", split="test", platform="sagemaker")
    assert split_job["records"] == split_local["records"] == 10_000
    _assert_same_records(_lines((tmp_path / "split-job.jsonl").read_bytes()),
                         _lines((tmp_path / "split-local.jsonl").read_bytes()))


def _upload(folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _s3().upload_file(str(path), BUCKET, f"{prefix}{path.relative_to(folder).as_posix()}")


def test_an_s3_prefix_scores_locally_as_the_same_folder_and_the_output_goes_to_s3(
    service: FakeTransformService, use_case_dir: Path, folder: Path, tmp_path: Path
) -> None:
    from modelcycle.core.lifecycle import UseCase

    _upload(folder, "records/")
    _s3().put_object(Bucket=BUCKET, Key="records2/x.npy", Body=b"not read: another prefix")
    use_case = UseCase(use_case_dir)
    local = use_case.transform(tmp_path / "local.jsonl", input=folder, platform="local")
    remote = use_case.transform("s3://modelcycle-test-bucket/scores/out.jsonl", input=f"s3://{BUCKET}/records",
                                platform="local")
    assert remote["output"] == f"s3://{BUCKET}/scores/out.jsonl"
    assert remote["sources"] == local["sources"] == ["a.npy", "b.npy", "sub/c.jsonl"]
    written = _s3().get_object(Bucket=BUCKET, Key="scores/out.jsonl")["Body"].read()
    _assert_same_records(_lines(written), _lines((tmp_path / "local.jsonl").read_bytes()))
    assert service.requests("CreateTransformJob") == []  # in-process


def test_an_s3_prefix_of_npy_objects_is_scored_where_it_is_one_request_per_object(
    service: FakeTransformService, use_case_dir: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcycle.core.lifecycle import UseCase

    (folder / "sub" / "c.jsonl").unlink()
    _upload(folder, "arrays/")
    use_case = UseCase(use_case_dir)
    use_case.transform(tmp_path / "local.jsonl", input=folder, platform="local")
    result = use_case.transform(tmp_path / "job.jsonl", input=f"s3://{BUCKET}/arrays/")

    (create,) = service.requests("CreateTransformJob")
    assert create["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/arrays/"}},
        "ContentType": "application/x-npy"}  # SplitType None: each object is one request
    assert create["MaxPayloadInMB"] == 6  # the largest object (4 KB) fits SageMaker's default
    assert result["job"]["input_uri"] == f"s3://{BUCKET}/arrays/"
    assert result["records"] == 6
    _assert_same_records(_lines((tmp_path / "job.jsonl").read_bytes()), _lines((tmp_path / "local.jsonl").read_bytes()))

    # an object above the request limit (here lowered to 0 MB) is named before any job starts
    from modelcycle.core.transform import TransformError
    from modelcycle.platforms.sagemaker import transform

    monkeypatch.setattr(transform, "_MAX_PAYLOAD_MB", 0)
    with pytest.raises(TransformError, match=r"s3://modelcycle-test-bucket/arrays/a\.npy is 1 MB: .* at most 0 MB.*"
                                             r"--platform local"):
        use_case.transform(tmp_path / "job2.jsonl", input=f"s3://{BUCKET}/arrays/")
    assert len(service.requests("CreateTransformJob")) == 1


def test_bad_s3_inputs_are_named_with_the_fix(
    service: FakeTransformService, use_case_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcycle.core.errors import ConfigError
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.transform import TransformError

    use_case = UseCase(use_case_dir)
    output = tmp_path / "out.jsonl"
    with pytest.raises(TransformError, match=r"s3://modelcycle-test-bucket/empty/ holds no \.npy or \.jsonl objects: give the prefix"):
        use_case.transform(output, input=f"s3://{BUCKET}/empty/", platform="local")
    _s3().put_object(Bucket=BUCKET, Key="notes/readme.txt", Body=b"x")
    with pytest.raises(TransformError, match=r"holds no \.npy or \.jsonl objects \(it holds 1 other object\(s\), e\.g\. readme\.txt\)"):
        use_case.transform(output, input=f"s3://{BUCKET}/notes/", platform="local")
    with pytest.raises(ConfigError, match=r"S3 bucket 'no-such-bucket' does not exist"):
        use_case.transform(output, input="s3://no-such-bucket/records/", platform="local")
    with pytest.raises(TransformError, match=r"--log-payload .* pass --platform local"):
        use_case.transform(output, split="test", log_payload=True)
    with pytest.raises(TransformError, match=r"--output s3://modelcycle-test-bucket/scores/ names a prefix"):
        use_case.transform(f"s3://{BUCKET}/scores/", split="test", platform="local")
    assert not output.exists() and service.requests("CreateTransformJob") == []

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match=r"reading s3://modelcycle-test-bucket/records/: no usable AWS credentials"):
        use_case.transform(output, input=f"s3://{BUCKET}/records/", platform="local")


def test_the_command_line_runs_a_job_with_platform(
    service: FakeTransformService, use_case_dir: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from modelcycle.cli import main

    (folder / "a.npy").unlink()
    (folder / "sub" / "c.jsonl").unlink()
    assert main(["-C", str(use_case_dir), "transform", "--input", str(folder), "--output", str(tmp_path / "o.jsonl"), "--platform",
                 "sagemaker"]) == 0
    out = capsys.readouterr().out
    assert "sagemaker transform job sm-transform-transform-" in out and f"wrote {tmp_path / 'o.jsonl'}" in out
    assert len(_lines((tmp_path / "o.jsonl").read_bytes())) == 1
    assert len(service.requests("CreateTransformJob")) == 1


def test_a_failed_job_reports_sagemakers_reason_and_writes_nothing(
    service: FakeTransformService, use_case_dir: Path, folder: Path, tmp_path: Path
) -> None:
    import boto3

    from modelcycle.core.errors import StageError
    from modelcycle.core.lifecycle import UseCase

    service.fail_with = "ClientError: See job logs for more information"
    output = tmp_path / "job.jsonl"
    with pytest.raises(StageError, match=r"transform job sm-transform-transform-\S+ ended Failed: ClientError: See job "
                                         r"logs for more information\. Its logs are in CloudWatch"):
        UseCase(use_case_dir).transform(output, input=folder)
    assert not output.exists()
    assert len(service.requests("CreateTransformJob")) == 1
    assert boto3.client("sagemaker", region_name=REGION).list_models()["Models"] == []  # the job's model is removed
