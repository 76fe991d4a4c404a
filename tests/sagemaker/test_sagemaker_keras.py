"""A built-in keras model on a SageMaker endpoint: TensorFlow Serving in SageMaker's TensorFlow
inference container, modelcycle's ``input_handler``/``output_handler`` in ``code/inference.py``.

Two proofs, against a moto server on 127.0.0.1 and a loopback TensorFlow Serving REST emulator:

* the CreateModel request ``deploy`` sends: the ``tensorflow-inference`` image of the configured
  version, the environment, and the ``model.tar.gz`` it names (the SavedModel where the container's
  ``find_models`` looks, ``code/inference.py``, ``code/requirements.txt`` installing the shipped
  wheel and no TensorFlow);
* the container's contract replayed on that very archive: its ``code/inference.py`` imported as the
  container imports it, each request dispatched as its Python service does (``input_handler`` →
  ``POST context.rest_uri`` → ``output_handler``, any exception → 500 ``{"error": str(e)}``), TF
  Serving played by :class:`TfServingEmulator` (the SavedModels found as ``find_models`` finds
  them, REST ``/v1/models/<name>:predict`` per TF Serving's API). The same JSON and NPY requests
  answer what the local endpoint's pipeline answers; a client's mistake comes back as the local
  4xx through modelcycle's client.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import tarfile
import threading
from collections import namedtuple
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sagemaker")
pytest.importorskip("moto")
pytest.importorskip("tensorflow")

from conftest import write_use_case  # noqa: E402
from test_sagemaker_platform import (  # noqa: E402,F401 - the fixtures are used by name
    BUCKET,
    REGION,
    ROLE,
    aws,
    moto_server,
    no_internet,
)

TFS_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:{version}-cpu"
TINY = {
    "data": {"dataset": "mnist", "train_limit": 600, "test_limit": 200},
    "hyperparameters": {"epochs": 1, "batch_size": 100, "log_interval": 5},
    "model": {"architecture": "cnn", "conv1_filters": 4, "conv2_filters": 8, "dense_units": 16},
}

#: ``tfs_utils.Context`` of SageMaker's TensorFlow Serving container, field for field.
Context = namedtuple("Context", "model_name, model_version, method, rest_uri, grpc_port, channel, "
                                "custom_attributes, request_content_type, accept_header, content_length")


class FakeSageMaker:
    """WSGI middleware over moto recording every SageMaker API request ``(action, request)``;
    with ``container`` set (``(body, content_type, accept) -> (status, body, type)``), it answers
    InvokeEndpoint as SageMaker's runtime does: the container's 200 as is, any other status as a
    ``ModelError`` (HTTP 424) carrying ``OriginalStatusCode`` and ``OriginalMessage``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.container: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.container is not None and re.fullmatch(r"/endpoints/[^/]+/invocations", environ.get("PATH_INFO", "")):
            return self._invoke(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("SageMaker."):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            self.log.append((target.split(".", 1)[1], json.loads(body or b"{}")))
        return self.app(environ, start_response)

    def requests(self, action: str) -> list[dict[str, Any]]:
        return [request for name, request in self.log if name == action]

    def _invoke(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        status, answer, answer_type = self.container(body, environ.get("CONTENT_TYPE"), environ.get("HTTP_ACCEPT"))
        if status == 200:
            start_response("200 OK", [("Content-Type", answer_type), ("Content-Length", str(len(answer))),
                                      ("x-Amzn-Invoked-Production-Variant", "AllTraffic")])
            return [answer]
        message = answer.decode(errors="replace")
        error = json.dumps({"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": status,
                            "OriginalMessage": message, "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group",
                            "Message": f"Received server error ({status}) from primary with message \"{message}\""}).encode()
        start_response("424 Failed Dependency", [("Content-Type", "application/json"), ("Content-Length", str(len(error))),
                                                 ("x-amzn-ErrorType", "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/")])
        return [error]


def find_models(base: Path) -> dict[str, Path]:
    """``{name: base path}`` of the SavedModels TF Serving serves from ``base`` (the container's
    ``/opt/ml/model``): every ``<path>/<digits>/saved_model.pb``, named ``basename(<path>)``."""
    found: dict[str, Path] = {}
    for pb in sorted(base.rglob("saved_model.pb")):
        if re.fullmatch(r"\d+", pb.parent.name):
            found.setdefault(pb.parent.parent.name, pb.parent.parent)
    return found


class TfServingEmulator:
    """TensorFlow Serving's REST API on 127.0.0.1 for the SavedModels under a model directory:
    ``GET /v1/models/<name>`` (version status) and ``POST /v1/models/<name>[/versions/<v>]:predict``
    with the row (``instances`` → ``predictions``) or columnar (``inputs`` → ``outputs``) format;
    errors are ``{"error": ...}`` with 400 (bad request) or 404 (no such model)."""

    def __init__(self, model_dir: Path) -> None:
        import tensorflow as tf

        self.models: dict[str, tuple[str, Any]] = {}
        for name, base in find_models(model_dir).items():
            version = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
            self.models[name] = (version.name, tf.saved_model.load(str(version)))
        self.requests: list[dict[str, Any]] = []
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, document: Any) -> None:
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                match = re.fullmatch(r"/v1/models/([^/:]+)", self.path)
                if not match or match.group(1) not in emulator.models:
                    return self._answer(404, {"error": f"Could not find any versions of model {self.path}"})
                version = emulator.models[match.group(1)][0]
                self._answer(200, {"model_version_status": [{"version": version, "state": "AVAILABLE",
                                                             "status": {"error_code": "OK", "error_message": ""}}]})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, document = emulator.predict(self.path, body)
                self._answer(status, document)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def predict(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        import tensorflow as tf

        match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:predict", path)
        if not match:
            return 404, {"error": f"Malformed request: POST {path}"}
        name, version = match.groups()
        if name not in self.models or version not in (None, self.models[name][0]):
            return 404, {"error": f"Servable not found for request: Latest({name})"}
        try:
            document = json.loads(body)
        except ValueError as exc:
            return 400, {"error": f"JSON Parse error: {exc}"}
        self.requests.append(document)
        if not isinstance(document, dict) or ("instances" in document) == ("inputs" in document):
            return 400, {"error": "Missing 'inputs' or 'instances' key"}
        loaded = self.models[name][1]
        signature_name = document.get("signature_name", "serving_default")
        if signature_name not in loaded.signatures:
            return 400, {"error": f"Serving signature name: \"{signature_name}\" not found in signature def"}
        signature = loaded.signatures[signature_name]
        (input_name, spec), = signature.structured_input_signature[1].items()
        values = document.get("instances", document.get("inputs"))
        try:
            outputs = signature(**{input_name: tf.convert_to_tensor(values, dtype=spec.dtype)})
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as exc:
            return 400, {"error": str(exc).splitlines()[0]}
        results = {key: value.numpy().tolist() for key, value in outputs.items()}
        if "inputs" in document:
            return 200, {"outputs": next(iter(results.values())) if len(results) == 1 else results}
        if len(results) == 1:
            return 200, {"predictions": next(iter(results.values()))}
        rows = len(next(iter(results.values())))
        return 200, {"predictions": [{key: value[i] for key, value in results.items()} for i in range(rows)]}

    def __enter__(self) -> TfServingEmulator:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def invoke_container(inference: Any, rest_uri: str, body: bytes, content_type: str | None,
                     accept: str | None) -> tuple[int, bytes, str]:
    """One ``POST /invocations`` as the container's Python service runs it with ``input_handler``
    and ``output_handler``: ``(status, body, content type)``."""
    import requests

    context = Context(None, None, None, rest_uri, "9000", None, None,
                      content_type or "application/json", accept or "application/json", len(body))
    try:
        processed = inference.input_handler(io.BytesIO(body), context)
        response = requests.post(context.rest_uri, data=processed, timeout=30)
        answer, answer_type = inference.output_handler(response, context)
        return 200, answer, answer_type
    except Exception as exc:  # the container's own broad except: 500 {"error": str(e)}
        return 500, json.dumps({"error": str(exc)}).encode(), "application/json"


def import_handlers(model_dir: Path) -> Any:
    """``code/inference.py`` imported as the container imports ``/opt/ml/model/code/inference.py``."""
    spec = importlib.util.spec_from_file_location("inference", model_dir / "code" / "inference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "input_handler") and hasattr(module, "output_handler") and not hasattr(module, "handler")
    return module


@pytest.fixture(scope="module")
def keras_use_case(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny keras CNN trained locally on 600 MNIST images, its serving section on SageMaker."""
    import os

    from modelcycle.core.lifecycle import UseCase

    directory = write_use_case(tmp_path_factory.mktemp("sm-keras") / "uc", example="mnist-keras", name="sm-keras",
                               serving={"platform": "sagemaker", "role": ROLE, "bucket": BUCKET}, **TINY)
    previous = os.environ.get("MODELCYCLE_DATA_DIR")
    os.environ["MODELCYCLE_DATA_DIR"] = str(data_dir)
    try:
        UseCase(directory).train()
    finally:
        if previous is None:
            os.environ.pop("MODELCYCLE_DATA_DIR", None)
        else:
            os.environ["MODELCYCLE_DATA_DIR"] = previous
    return directory


@pytest.fixture
def deployed(aws: Any, keras_use_case: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The keras use case deployed to SageMaker (moto): the endpoint record, the CreateModel
    request, and the archive it names extracted as the container's ``/opt/ml/model``."""
    import boto3

    from modelcycle.core.lifecycle import UseCase

    recorder = FakeSageMaker(aws.app)
    aws.app = recorder
    use_case = UseCase(keras_use_case)
    local_model_dir = Path(use_case.state().stage("train").outputs["model_dir"])
    endpoint = use_case.deploy(force=True)
    try:
        (request,) = recorder.requests("CreateModel")
        bucket, key = request["PrimaryContainer"]["ModelDataUrl"][len("s3://"):].split("/", 1)
        archive = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read()
        opt_ml_model = tmp_path / "opt" / "ml" / "model"
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            names = set(tar.getnames())
            tar.extractall(opt_ml_model, filter="data")
        yield {"endpoint": endpoint, "request": request, "names": names, "model_dir": opt_ml_model,
               "local_model_dir": local_model_dir, "sagemaker": recorder}
    finally:
        use_case.cleanup()


def test_deploy_creates_a_tensorflow_serving_model_with_the_savedmodel_and_self_contained_handlers(
    deployed: dict[str, Any],
) -> None:
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.platforms.sagemaker.session import DEFAULT_VERSIONS

    request, names, endpoint = deployed["request"], deployed["names"], deployed["endpoint"]
    container = request["PrimaryContainer"]
    version = DEFAULT_VERSIONS["keras"][0]
    assert container["Image"] == TFS_IMAGE.format(version=version) == endpoint["image"]
    assert request["ExecutionRoleArn"] == ROLE
    # the model name pinned to the SavedModel's directory; no PyTorch-style SAGEMAKER_PROGRAM
    assert container["Environment"] == {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "model"}
    assert container["ModelDataUrl"].startswith(f"s3://{BUCKET}/")

    model_dir = deployed["model_dir"]
    manifest = read_manifest(model_dir)
    wheel = f"code/modelcycle-{manifest.modelcycle_version}-py3-none-any.whl"
    assert {"model/1/saved_model.pb", "model.keras", "modelcycle.json", "code/inference.py",
            "code/requirements.txt", wheel} <= names
    assert any(n.startswith("model/1/variables/variables.data") for n in names)
    # where the container's find_models looks: <base>/<version>/saved_model.pb, served as basename(<base>)
    assert find_models(model_dir) == {"model": model_dir / "model"}
    inference = (model_dir / "code" / "inference.py").read_text()
    assert "from modelcycle.core.serving.tfs import tfs_handlers" in inference
    assert "input_handler, output_handler = tfs_handlers(" in inference
    requirements = (model_dir / "code" / "requirements.txt").read_text().splitlines()
    assert requirements == [f"modelcycle=={manifest.modelcycle_version}", "--find-links ."]
    assert not any("tensorflow" in line or "keras" in line for line in requirements)


def test_the_archives_handlers_answer_as_the_local_endpoint_through_tensorflow_serving(
    deployed: dict[str, Any], mnist_test_images: tuple[Any, Any],
) -> None:
    import orjson

    from modelcycle.core.errors import ServingError
    from modelcycle.core.serving.pipeline import InferencePipeline
    from modelcycle.platforms.sagemaker import endpoints

    model_dir = deployed["model_dir"]
    name = deployed["request"]["PrimaryContainer"]["Environment"]["SAGEMAKER_TFS_DEFAULT_MODEL_NAME"]
    local = InferencePipeline(deployed["local_model_dir"])  # what the local endpoint serves
    inference = import_handlers(model_dir)
    images = mnist_test_images[0]
    images = images[:16]

    def locally(body: bytes, content_type: str, accept: str) -> tuple[int, bytes]:
        try:
            from modelcycle.core.serving.codecs import negotiate_accept

            kind = negotiate_accept(accept)
            return 200, local.encode(local.predict(local.decode(body, content_type)), kind)[0]
        except ServingError as exc:
            return exc.status_code, str(exc).encode()

    json_body = orjson.dumps({"input_data": [{"values": images}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    instances = orjson.dumps({"instances": images.reshape(16, 28, 28, 1)}, option=orjson.OPT_SERIALIZE_NUMPY)
    npy = io.BytesIO()
    np.save(npy, images.astype(np.uint8), allow_pickle=False)

    with TfServingEmulator(model_dir) as tfs:
        rest_uri = f"{tfs.url}/v1/models/{name}:predict"
        for body, content_type, accept in ((json_body, "application/json", None),
                                           (instances, "application/json", "application/json"),
                                           (npy.getvalue(), "application/x-npy", "application/json")):
            status, answer, answer_type = invoke_container(inference, rest_uri, body, content_type, accept)
            assert (status, answer_type) == (200, "application/json"), answer
            expected_status, expected = locally(body, content_type, accept or "application/json")
            assert expected_status == 200
            got, want = json.loads(answer), json.loads(expected)
            assert got["predictions"][0]["fields"] == want["predictions"][0]["fields"] == ["prediction", "probability"]
            got_rows, want_rows = got["predictions"][0]["values"], want["predictions"][0]["values"]
            assert [row[0] for row in got_rows] == [row[0] for row in want_rows]
            np.testing.assert_allclose([row[1] for row in got_rows], [row[1] for row in want_rows], rtol=1e-5, atol=1e-6)
        # what TF Serving received: the normalised, channels-last instances
        sent = np.asarray(tfs.requests[-1]["instances"], dtype=np.float32)
        assert sent.shape == (16, 28, 28, 1)

        # NPY in, NPY out: the (N, K) probability array the local endpoint answers
        status, answer, answer_type = invoke_container(inference, rest_uri, npy.getvalue(), "application/x-npy",
                                                       "application/x-npy")
        assert (status, answer_type) == (200, "application/x-npy")
        _, expected = locally(npy.getvalue(), "application/x-npy", "application/x-npy")
        np.testing.assert_allclose(np.load(io.BytesIO(answer)), np.load(io.BytesIO(expected)), rtol=1e-5, atol=1e-6)

        # a client's mistake: the container answers 500, its text carries the local 4xx and message
        seen = len(tfs.requests)
        for body, content_type, accept in ((b'{"input_data": [{"values": [[1, 2, 3]]}]}', "application/json", None),
                                           (b"{not json", "application/json", None),
                                           (json_body, "text/csv", None),
                                           (json_body, "application/json", "text/html")):
            status, answer, _ = invoke_container(inference, rest_uri, body, content_type, accept)
            expected_status, expected = locally(body, content_type, accept or "application/json")
            assert 400 <= expected_status < 500
            assert status == 500
            assert endpoints._client_error(status, answer.decode()) == (expected_status, expected.decode())
        assert len(tfs.requests) == seen  # refused before TF Serving

        # through modelcycle's SageMaker client (SDK Predictor → runtime → this container): the same
        # answer as locally, and a client's mistake as the local 4xx and message
        deployed["sagemaker"].container = lambda body, content_type, accept: invoke_container(
            inference, rest_uri, body, content_type, accept)
        endpoint = deployed["endpoint"]
        status, answer, answer_type = endpoints.invoke(endpoint, json_body, "application/json", "application/json")
        assert (status, answer_type) == (200, "application/json")
        assert [row[0] for row in json.loads(answer)["predictions"][0]["values"]] == [row[0] for row in want_rows]
        bad = b'{"input_data": [{"values": [[1, 2, 3]]}]}'
        status, answer, _ = endpoints.invoke(endpoint, bad, "application/json", "application/json")
        expected_status, expected = locally(bad, "application/json", "application/json")
        assert (status, json.loads(answer)["error"]) == (expected_status, expected.decode())
        assert status == 400

        # TF Serving's own failure (here: the model name is wrong) is a server error, not a client's
        status, answer, _ = invoke_container(inference, f"{tfs.url}/v1/models/nope:predict", json_body,
                                             "application/json", None)
        assert status == 500 and "TensorFlow Serving answered 404" in json.loads(answer)["error"]
        assert endpoints._client_error(status, answer.decode())[0] == 500


def test_a_keras_model_without_its_savedmodel_is_refused_before_any_aws_call(
    no_internet: list[Any], keras_use_case: Path, tmp_path: Path,
) -> None:
    import shutil

    from modelcycle.core.config import ServingConfig
    from modelcycle.core.errors import ConfigError
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.platforms.sagemaker import endpoints

    model_dir = tmp_path / "m"
    shutil.copytree(Path(UseCase(keras_use_case).state().stage("train").outputs["model_dir"]), model_dir)
    shutil.rmtree(model_dir / "model")
    settings = ServingConfig(platform="sagemaker", role=ROLE, bucket=BUCKET)
    with pytest.raises(ConfigError, match=r"no TensorFlow Serving SavedModel \(model/1/saved_model\.pb\).*retrain"):
        endpoints.deploy("k", model_dir, settings, tmp_path / ".modelcycle")
    assert no_internet == []
