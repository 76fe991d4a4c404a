"""A script-mode model served by the local endpoint through the user's own SageMaker handlers.

The model directories follow the script-mode contract (what the script wrote to ``SM_MODEL_DIR``
at the top, the source dir under ``code/``, ``modelcycle.json`` with ``script``): the Keras one
from the seed-style ``tests/resources/script-mnist-keras/train.py`` run as SageMaker would run it
(``SM_*`` variables, hyperparameters as arguments) on a slice of real MNIST, the PyTorch one from
a state dict and handlers written here. Every endpoint process is stopped by pid, also when a test
fails.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import REPO, mark_trained, stop_deployed, write_use_case
from modelcycle.core.artifacts import (
    DatasetLineage,
    InputSchema,
    Manifest,
    Preprocessing,
    ScriptMode,
    hash_files,
    modelcycle_version,
    write_manifest,
)
from modelcycle.core.errors import ArtifactError, ModelcycleError, ServingError
from modelcycle.core.monitoring.store import MonitoringStore
from modelcycle.core.serving.script_handlers import check_handlers
from modelcycle.core.serving.script_pipeline import as_probabilities
from modelcycle.platforms.local.endpoints import process_alive, start_endpoint, stop_endpoint

KERAS_RESOURCE = REPO / "tests" / "resources" / "script-mnist-keras"
TOKEN = "script-serving-token"
JSON_TYPE, NPY_TYPE = "application/json", "application/x-npy"

#: A seed-style PyTorch handler set: a helper module beside inference.py, a state dict loaded by
#: model_fn, log-probabilities from predict_fn, the toolkit's default output_fn.
TORCH_NET = '''\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return torch.log_softmax(self.fc(x.reshape(len(x), -1) / 255.0), dim=1)
'''
TORCH_INFERENCE = '''\
import io
import json
import os

import numpy as np
import torch

from net import Net


def model_fn(model_dir):
    model = Net()
    with open(os.path.join(model_dir, "model.pth"), "rb") as f:
        model.load_state_dict(torch.load(f, weights_only=True))
    return model.eval()


def input_fn(request_body, request_content_type):
    if request_content_type == "application/json":
        data = np.asarray(json.loads(request_body), dtype=np.float32)
    elif request_content_type == "application/x-npy":
        data = np.load(io.BytesIO(request_body), allow_pickle=False).astype(np.float32)
    else:
        raise ValueError(f"unsupported content type {request_content_type}")
    if data.ndim < 2:
        raise ValueError(f"send a batch of images, got shape {list(data.shape)}")
    return torch.from_numpy(data.reshape(len(data), -1))


def predict_fn(input_data, model):
    with torch.no_grad():
        return model(input_data)
'''


def _manifest(model_dir: Path, framework: str, serving_entry_point: str | None, train_records: int) -> Manifest:
    """Write the script-mode manifest of ``model_dir`` (hashes of every file, code/ included)."""
    version = modelcycle_version()
    manifest = Manifest(
        use_case=f"script-{framework}", framework=framework, framework_version=version, modelcycle_version=version,
        run_id=uuid.uuid4().hex, created_at=Manifest.now(),
        model_files=sorted(p.name for p in model_dir.iterdir() if p.name != "code"),
        input_schema=InputSchema(shape=(1, 28, 28)), preprocessing=Preprocessing(scale=1.0, mean=(0.0,), std=(1.0,)),
        classes=[str(i) for i in range(10)],
        dataset=DatasetLineage(name="mnist", checksums={}, train_records=train_records, test_records=10000),
        script=ScriptMode(training_entry_point="train.py", serving_entry_point=serving_entry_point),
        files=hash_files(model_dir),
    )
    write_manifest(model_dir, manifest)
    return manifest


def _import_handlers(code_dir: Path, name: str) -> ModuleType:
    """The user's handler file imported in the test process (to compute its own answers)."""
    sys.path.insert(0, str(code_dir))
    try:
        spec = importlib.util.spec_from_file_location(name, code_dir / "inference.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(code_dir))


@pytest.fixture(scope="module")
def keras_model_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The Keras resource's train.py run with SageMaker's variables on 1,000 training images."""
    work = tmp_path_factory.mktemp("keras-script")
    channels = {"training": ("train",), "testing": ("t10k",)}
    env = {**os.environ, "SM_MODEL_DIR": str(work / "model")}
    for channel, prefixes in channels.items():
        directory = work / "input" / channel
        directory.mkdir(parents=True)
        for prefix in prefixes:
            for kind in ("images-idx3", "labels-idx1"):
                name = f"{prefix}-{kind}-ubyte.gz"
                shutil.copy(data_dir / "mnist" / name, directory / name)
        env[f"SM_CHANNEL_{channel.upper()}"] = str(directory)
    (work / "model").mkdir()
    done = subprocess.run(
        [sys.executable, str(KERAS_RESOURCE / "train.py"), "--epochs", "1", "--batch-size", "64",
         "--learning-rate", "0.002", "--max-samples", "1000"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Test set: Average loss:" in done.stdout and "Accuracy: " in done.stdout
    model_dir = work / "model"
    assert (model_dir / "1" / "saved_model.pb").is_file()
    shutil.copytree(KERAS_RESOURCE, model_dir / "code", ignore=shutil.ignore_patterns("__pycache__", ".modelcycle"))
    _manifest(model_dir, "keras", "inference.py", 1000)
    return model_dir


@pytest.fixture(scope="module")
def torch_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict saved here and the PyTorch handler set above (helper module included)."""
    import torch

    model_dir = tmp_path_factory.mktemp("torch-script") / "model"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "net.py").write_text(TORCH_NET)
    (model_dir / "code" / "inference.py").write_text(TORCH_INFERENCE)
    namespace: dict[str, Any] = {}
    exec(TORCH_NET, namespace)  # the same class the endpoint imports from code/net.py
    torch.manual_seed(0)
    torch.save(namespace["Net"]().state_dict(), model_dir / "model.pth")
    _manifest(model_dir, "pytorch", "inference.py", 0)
    return model_dir


@pytest.fixture(scope="module")
def keras_endpoint(keras_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The Keras model behind a bearer token, logging its payload into SQLite."""
    work = tmp_path_factory.mktemp("keras-endpoint")
    url = f"sqlite:///{work / 'monitoring.db'}"
    record = start_endpoint("script-keras", keras_model_dir, work / "run", token=TOKEN, timeout=600,
                            payload={"journal": str(work / "script-keras.journal"), "database_url": url})
    try:
        yield {**record, "database_url": url}
    finally:
        stop_endpoint(record)
        assert not process_alive(record["pid"])


@pytest.fixture(scope="module")
def torch_endpoint(torch_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("torch-endpoint")
    url = f"sqlite:///{work / 'monitoring.db'}"
    record = start_endpoint("script-torch", torch_model_dir, work / "run", timeout=600,
                            payload={"journal": str(work / "script-torch.journal"), "database_url": url})
    try:
        yield {**record, "database_url": url}
    finally:
        stop_endpoint(record)
        assert not process_alive(record["pid"])


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_keras_handlers_answer_json_and_npy_and_every_request_is_logged_with_its_prediction(
    keras_endpoint: dict[str, Any], keras_model_dir: Path, mnist_test_images: tuple[Any, Any]
) -> None:
    images, labels = mnist_test_images
    handlers = _import_handlers(keras_model_dir / "code", "keras_handlers_in_test")
    model = handlers.model_fn(str(keras_model_dir))
    expected = handlers.predict_fn(handlers.input_fn(_npy(images[:5]), NPY_TYPE), model)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=keras_endpoint["url"], headers=headers, timeout=120) as http:
        as_json = http.post("/invocations", content=json.dumps({"instances": images[:3].tolist()}),
                            headers={"Content-Type": JSON_TYPE})
        as_npy = http.post(f"/endpoints/{keras_endpoint['name']}/invocations", content=_npy(images[3:5]),
                           headers={"Content-Type": NPY_TYPE, "Accept": NPY_TYPE})
        unauthorized = httpx.post(keras_endpoint["url"] + "/invocations", content=_npy(images[:1]),
                                  headers={"Content-Type": NPY_TYPE})
        assert http.post("/payload/flush").status_code == 200
        metrics = http.get("/metrics").text
        inline = http.post("/feedback", json={"fields": ["scoring_input", "label"],
                                              "values": [[images[5].tolist(), int(labels[5])]]})
        by_id = http.post("/feedback", json={"scoring_id": f"{as_json.headers['x-scoring-id']}-0", "label": int(labels[0])})

    assert inline.status_code == 200 and inline.json()["stored"] == 1, inline.text  # scored through the handlers
    assert by_id.status_code == 200 and by_id.json()["stored"] == 1, by_id.text
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == JSON_TYPE
    assert np.allclose(as_json.json()["predictions"], expected[:3], atol=1e-5)
    assert as_npy.status_code == 200 and as_npy.headers["content-type"] == NPY_TYPE
    assert np.allclose(np.load(io.BytesIO(as_npy.content)), expected[3:5], atol=1e-5)
    assert unauthorized.status_code == 401

    store = MonitoringStore(keras_endpoint["database_url"])
    assert store.feedback_count("script-keras") == 2
    records = store.payload_records("script-keras")
    by_request = {}
    for record in records:
        by_request.setdefault(record["request_id"], []).append(record)
    logged_json = sorted(by_request[as_json.headers["x-scoring-id"]], key=lambda r: r["scoring_id"])
    logged_npy = sorted(by_request[as_npy.headers["x-scoring-id"]], key=lambda r: r["scoring_id"])
    for record, image, probabilities in zip(logged_json + logged_npy, images[:5], expected):
        assert bytes(record["scoring_input"]) == image.tobytes()  # the decoded input, as raw pixels
        assert record["prediction"] == int(probabilities.argmax())
        assert np.allclose(np.frombuffer(record["probability"], "<f4"), probabilities, atol=1e-5)
    assert _metric(metrics, "modelcycle_requests_total", code="200") == 2
    assert _metric(metrics, "modelcycle_requests_total", code="401") == 1
    assert _metric(metrics, "modelcycle_records_total") == 5


def test_a_client_mistake_is_a_400_a_handler_failure_a_500_and_the_endpoint_keeps_serving(
    torch_endpoint: dict[str, Any], torch_model_dir: Path, mnist_test_images: tuple[Any, Any]
) -> None:
    images, _ = mnist_test_images
    with httpx.Client(base_url=torch_endpoint["url"], timeout=120) as http:
        client_mistake = http.post("/invocations", content=b"[1, 2, 3]", headers={"Content-Type": JSON_TYPE})
        failure = http.post("/invocations", content=_npy(np.zeros((2, 5), np.float32)),
                            headers={"Content-Type": NPY_TYPE})  # the network wants 784 values: torch raises
        good = http.post("/invocations", content=_npy(images[:2]), headers={"Content-Type": NPY_TYPE})
        metrics = http.get("/metrics").text

    assert client_mistake.status_code == 400
    assert client_mistake.json()["message"] == "send a batch of images, got shape [3]"  # the handler's ValueError
    assert failure.status_code == 500
    message = failure.json()["message"]
    assert message.startswith("internal error while scoring (request id ") and "mat1" not in message
    request_id = message.split("request id ", 1)[1].split(")", 1)[0]
    log = Path(torch_endpoint["log"]).read_text()
    assert f"scoring failed (request id {request_id})" in log and "Traceback" in log and "mat1" in log
    assert good.status_code == 200, good.text
    assert _metric(metrics, "modelcycle_requests_total", code="400") == 1
    assert _metric(metrics, "modelcycle_requests_total", code="500") == 1


def test_torch_defaults_encode_the_handlers_prediction_and_log_probabilities_are_logged_as_probabilities(
    torch_endpoint: dict[str, Any], torch_model_dir: Path, mnist_test_images: tuple[Any, Any]
) -> None:
    images, _ = mnist_test_images
    handlers = _import_handlers(torch_model_dir / "code", "torch_handlers_in_test")
    model = handlers.model_fn(str(torch_model_dir))
    expected = handlers.predict_fn(handlers.input_fn(_npy(images[:4]), NPY_TYPE), model).numpy()
    with httpx.Client(base_url=torch_endpoint["url"], timeout=120) as http:
        as_json = http.post("/invocations", content=json.dumps(images[:2].tolist()), headers={"Content-Type": JSON_TYPE})
        as_npy = http.post("/invocations", content=_npy(images[2:4]),
                           headers={"Content-Type": NPY_TYPE, "Accept": NPY_TYPE})
        assert http.post("/payload/flush").status_code == 200
    assert as_json.status_code == 200 and as_npy.status_code == 200
    assert np.allclose(as_json.json(), expected[:2], atol=1e-5)  # the toolkit's JSON: a bare nested list
    assert np.allclose(np.load(io.BytesIO(as_npy.content)), expected[2:], atol=1e-6)
    records = [r for r in MonitoringStore(torch_endpoint["database_url"]).payload_records("script-torch")
               if r["request_id"] == as_json.headers["x-scoring-id"]]
    assert len(records) == 2
    for record in sorted(records, key=lambda r: r["scoring_id"]):
        row = expected[int(record["scoring_id"].rsplit("-", 1)[1])]
        assert np.allclose(np.frombuffer(record["probability"], "<f4"), np.exp(row), atol=1e-5)
        assert record["prediction"] == int(row.argmax())


EMBEDDING_INFERENCE = TORCH_INFERENCE.replace(
    "        return model(input_data)", '        return {"embedding": model.fc(input_data).tolist()}')


def test_a_prediction_that_is_not_class_probabilities_is_served_and_logged_without_one(
    tmp_path: Path, torch_model_dir: Path, mnist_test_images: tuple[Any, Any]
) -> None:
    images, _ = mnist_test_images
    model_dir = tmp_path / "model"
    shutil.copytree(torch_model_dir, model_dir)
    (model_dir / "code" / "inference.py").write_text(EMBEDDING_INFERENCE)
    _manifest(model_dir, "pytorch", "inference.py", 0)
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    record = start_endpoint("script-embedding", model_dir, tmp_path / "run", timeout=600,
                            payload={"journal": str(tmp_path / "embedding.journal"), "database_url": url})
    try:
        with httpx.Client(base_url=record["url"], timeout=120) as http:
            answers = [http.post("/invocations", content=_npy(images[i:i + 2]), headers={"Content-Type": NPY_TYPE})
                       for i in (0, 2)]
            assert http.post("/payload/flush").status_code == 200
    finally:
        stop_endpoint(record)
        assert not process_alive(record["pid"])
    assert [a.status_code for a in answers] == [200, 200]
    assert len(answers[0].json()["embedding"]) == 2  # the handlers' own answer, served as it is
    records = MonitoringStore(url).payload_records("script-embedding")
    assert sorted(bytes(r["scoring_input"]) for r in records) == sorted(i.tobytes() for i in images[:4])
    assert all(r["prediction"] is None and r["probability"] is None for r in records)
    assert Path(record["log"]).read_text().count("is not class probabilities") == 1  # said once


def _use_case_with(tmp_path: Path, model_dir: Path, inference: str | None) -> tuple[Path, Path]:
    """A use case marked trained with a copy of ``model_dir`` whose inference.py is ``inference``
    (``None``: removed from the manifest's serving entry point and the directory)."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    handler = copy / "code" / "inference.py"
    if inference is None:
        handler.unlink()
    else:
        handler.write_text(inference)
    _manifest(copy, "pytorch", "inference.py" if inference is not None else None, 0)
    directory = write_use_case(tmp_path / "uc", name="script-refused")
    mark_trained(directory, copy)
    return directory, handler


def test_deploy_refuses_a_handler_file_with_a_syntax_error_naming_file_and_line(
    tmp_path: Path, torch_model_dir: Path
) -> None:
    from modelcycle.core.lifecycle import UseCase

    directory, handler = _use_case_with(tmp_path, torch_model_dir, "import torch\n\ndef model_fn(model_dir)\n    return None\n")
    try:
        with pytest.raises(ModelcycleError) as raised:
            UseCase(directory).deploy()
        assert f"{handler}:3: syntax error" in str(raised.value)
        assert not list((directory / ".modelcycle").rglob("*.log"))  # refused before any endpoint started
    finally:
        stop_deployed(directory)


def test_deploy_refuses_handlers_without_model_fn_when_the_framework_has_no_default(
    tmp_path: Path, torch_model_dir: Path
) -> None:
    from modelcycle.core.lifecycle import UseCase

    directory, handler = _use_case_with(tmp_path, torch_model_dir, "def predict_fn(data, model):\n    return model(data)\n")
    try:
        with pytest.raises(ModelcycleError) as raised:
            UseCase(directory).deploy()
        assert str(handler) in str(raised.value) and "defines no model_fn" in str(raised.value)
        assert not list((directory / ".modelcycle").rglob("*.log"))
    finally:
        stop_deployed(directory)


def test_handler_checks(tmp_path: Path, torch_model_dir: Path, keras_model_dir: Path) -> None:
    check_handlers(torch_model_dir)
    check_handlers(keras_model_dir)
    # transform_fn and the three steps are exclusive (SageMaker's rule)
    mixed = tmp_path / "mixed"
    shutil.copytree(torch_model_dir, mixed)
    (mixed / "code" / "inference.py").write_text(TORCH_INFERENCE + "\n\ndef transform_fn(model, body, ct, accept):\n    pass\n")
    _manifest(mixed, "pytorch", "inference.py", 0)
    with pytest.raises(ArtifactError, match="transform_fn together with input_fn, predict_fn"):
        check_handlers(mixed)
    # Keras: the SavedModel under 1/ is loaded by default, so a file without model_fn serves
    keras_copy = tmp_path / "keras"
    shutil.copytree(keras_model_dir, keras_copy)
    source = (keras_copy / "code" / "inference.py").read_text()
    (keras_copy / "code" / "inference.py").write_text(source.replace("def model_fn(", "def _unused_model_fn("))
    _manifest(keras_copy, "keras", "inference.py", 1000)
    check_handlers(keras_copy)


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ([[0.2, 0.8], [1.0, 0.0]], [[0.2, 0.8], [1.0, 0.0]]),  # probabilities as they are
        (np.log([[0.25, 0.75]]), [[0.25, 0.75]]),  # log-probabilities exponentiated
        ([[0.0, np.log(3.0)]], [[0.25, 0.75]]),  # scores softmaxed
        (np.array([1, 0]), [[0.0, 1.0], [1.0, 0.0]]),  # labels one-hot
    ],
)
def test_predictions_read_as_class_probabilities(prediction: Any, expected: Any) -> None:
    assert np.allclose(as_probabilities(prediction, None, 2), expected, atol=1e-6)


@pytest.mark.parametrize("prediction", [{"label": 1}, [[0.5, 0.5, 0.0]], np.array([0.5, 0.2]), np.array([3]), "x"])
def test_predictions_that_are_not_class_probabilities_are_not_guessed(prediction: Any) -> None:
    assert as_probabilities(prediction, None, 2) is None


def test_a_handler_value_error_is_a_client_error() -> None:
    from modelcycle.core.serving.script_pipeline import client_errors

    with pytest.raises(ServingError) as raised, client_errors():
        raise ValueError("bad pixels")
    assert raised.value.status_code == 400 and str(raised.value) == "bad pixels"


def test_transform_fn_answers_alone_and_its_requests_carry_no_prediction(tmp_path: Path, torch_model_dir: Path) -> None:
    from modelcycle.core.serving.script_pipeline import ScriptPipeline

    model_dir = tmp_path / "model"
    shutil.copytree(torch_model_dir, model_dir)
    (model_dir / "code" / "inference.py").write_text(TORCH_INFERENCE.split("def input_fn")[0] + '''
def transform_fn(model, request_body, content_type, accept):
    if content_type != "text/plain":
        raise TypeError(f"send text/plain, not {content_type}")
    return f"{type(model).__name__} got {request_body.decode()}", "text/plain"
''')
    _manifest(model_dir, "pytorch", "inference.py", 0)
    pipeline = ScriptPipeline(model_dir)
    scored = pipeline.score(b"hello", "text/plain", "*/*")
    assert (scored.body, scored.content_type) == (b"Net got hello", "text/plain")
    assert scored.inputs is None and scored.probabilities.shape == (1, 0)
    with pytest.raises(ServingError, match="send text/plain, not application/json") as raised:
        pipeline.score(b"{}", "application/json", "")
    assert raised.value.status_code == 400


NORMALISING_INFERENCE = TORCH_INFERENCE.replace(
    "    return torch.from_numpy(data.reshape(len(data), -1))",
    "    return torch.from_numpy((data.reshape(len(data), -1) / 255.0 - 0.1307) / 0.3081)",
).replace("x.reshape(len(x), -1) / 255.0", "x.reshape(len(x), -1)")


@pytest.mark.parametrize("content_type", [NPY_TYPE, JSON_TYPE])
def test_the_requests_raw_images_are_logged_when_input_fn_normalises_them(
    tmp_path: Path, torch_model_dir: Path, mnist_test_images: tuple[Any, Any], content_type: str
) -> None:
    """The seeds' input_fn normalises (values below 0): the record keeps the pixels the client
    sent, so feedback matched by image content finds it."""
    from modelcycle.core.serving.script_pipeline import ScriptPipeline

    model_dir = tmp_path / "model"
    shutil.copytree(torch_model_dir, model_dir)
    (model_dir / "code" / "inference.py").write_text(NORMALISING_INFERENCE)
    _manifest(model_dir, "pytorch", "inference.py", 0)
    images, _ = mnist_test_images
    body = _npy(images[:3]) if content_type == NPY_TYPE else json.dumps(images[:3].tolist()).encode()
    scored = ScriptPipeline(model_dir).score(body, content_type, JSON_TYPE)
    assert scored.tabular is False and scored.inputs is not None
    assert np.array_equal(scored.inputs, images[:3].reshape(3, 1, 28, 28).astype(np.float32))
    assert scored.probabilities.shape == (3, 10)


@pytest.mark.parametrize("body, content_type", [
    (_npy(np.log(np.full((2, 10), 0.1, dtype=np.float32))), NPY_TYPE),  # log-probabilities, as NPY
    (json.dumps([[0.1] * 10, [0.1] * 10]).encode(), JSON_TYPE),  # the toolkit's bare list
    (json.dumps({"predictions": [[0.1] * 10, [0.1] * 10]}).encode(), "application/json; charset=utf-8"),
])
def test_a_script_endpoints_answer_is_read_as_the_endpoint_logs_it(body: bytes, content_type: str) -> None:
    from modelcycle.core.serving.script_client import read_answer

    answer = read_answer(body, content_type, records=2, classes=10)
    np.testing.assert_allclose(answer.probabilities, np.full((2, 10), 0.1), atol=1e-6)


@pytest.mark.parametrize("body, content_type, message", [
    (json.dumps({"embedding": [[1.0, 2.0]]}).encode(), JSON_TYPE, "got NoneType"),
    (json.dumps([[0.5, 0.5]]).encode(), JSON_TYPE, r"for 2 record\(s\) of 10 classes \(got list of shape \[1, 2\]\)"),
    (b"7,2", "text/csv", "answered text/csv that is neither JSON nor .npy"),
])
def test_an_unreadable_script_answer_says_what_came_back(body: bytes, content_type: str, message: str) -> None:
    from modelcycle.core.serving.script_client import read_answer

    with pytest.raises(ServingError, match=message):
        read_answer(body, content_type, records=2, classes=10)
