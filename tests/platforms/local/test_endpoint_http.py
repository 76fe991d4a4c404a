"""The live local endpoint over HTTP: SageMaker's container contract, the runtime API path (also
through boto3), NPY, every client mistake as a 4xx JSON error after which the server still
serves, Prometheus metrics, bearer-token auth, the loopback rule and concurrent clients."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from modelcycle.platforms.local.endpoints import process_alive, start_endpoint, stop_endpoint
from modelcycle.platforms.local.server import is_loopback

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
NPY_TYPE = "application/x-npy"


def _client(record: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=record["url"], timeout=60.0, trust_env=False)


@pytest.fixture(scope="module")
def http(endpoint: dict[str, Any]) -> Iterator[httpx.Client]:
    with _client(endpoint) as client:
        yield client


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _rows(response: httpx.Response) -> list[list[Any]]:
    document = response.json()
    prediction = document["predictions"][0]
    assert prediction["fields"] == ["prediction", "probability"]
    return prediction["values"]


def _assert_still_serving(client: httpx.Client, image: np.ndarray) -> None:
    assert client.get("/ping").status_code == 200
    response = client.post("/invocations", content=orjson.dumps(image.tolist()), headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    rows = _rows(response)
    assert len(rows) == 1 and len(rows[0][1]) == 10


def _assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert set(document) == {"error", "message"}  # SageMaker runtime's "message", and the older shape
    assert document["error"]["code"] == status
    message = document["error"]["message"]
    assert isinstance(message, str) and message and document["message"] == message
    expected_type = {401: "AccessDeniedException", 500: "ModelError", 503: "ServiceUnavailable"}.get(status, "ValidationError")
    assert response.headers["x-amzn-errortype"] == expected_type
    return message


# ------------------------------------------------------------------------------------- contract


def test_ping(http: httpx.Client) -> None:
    response = http.get("/ping")
    assert response.status_code == 200


def test_single_image_scores_with_a_scoring_id(http: httpx.Client, mnist_test_images) -> None:
    images, _ = mnist_test_images
    response = http.post("/invocations", content=orjson.dumps(images[0].tolist()), headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["scoring_id"], str) and len(body["scoring_id"]) == 32
    assert response.headers["x-scoring-id"] == body["scoring_id"]
    rows = _rows(response)
    assert len(rows) == 1
    label, probabilities = rows[0]
    assert label == int(np.argmax(probabilities))
    assert abs(sum(probabilities) - 1.0) < 1e-5
    second = http.post("/invocations", content=orjson.dumps(images[0].tolist()), headers=JSON_HEADERS)
    assert second.json()["scoring_id"] != body["scoring_id"]
    assert _rows(second) == rows


def test_batch_of_64_gives_64_predictions(http: httpx.Client, mnist_test_images) -> None:
    images, labels = mnist_test_images
    body = orjson.dumps({"input_data": [{"values": images.tolist()}]})
    response = http.post("/invocations", content=body, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    rows = _rows(response)
    assert len(rows) == 64
    predicted = np.array([row[0] for row in rows])
    assert (predicted == labels).mean() >= 0.6  # the small fixture model is ~70 % accurate


def test_runtime_path_with_the_endpoint_name(http: httpx.Client, endpoint: dict[str, Any], mnist_test_images) -> None:
    images, _ = mnist_test_images
    body = orjson.dumps({"instances": images[:4].tolist()})
    response = http.post(f"/endpoints/{endpoint['name']}/invocations", content=body, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    assert len(_rows(response)) == 4
    direct = http.post("/invocations", content=body, headers=JSON_HEADERS)
    assert _rows(direct) == _rows(response)

    other = http.post("/endpoints/another-endpoint/invocations", content=body, headers=JSON_HEADERS)
    message = _assert_error(other, 404)
    assert "another-endpoint" in message and endpoint["name"] in message


def test_boto3_sagemaker_runtime_client(endpoint: dict[str, Any], mnist_test_images, monkeypatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    images, labels = mnist_test_images
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=endpoint["url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=60),
    )
    body = orjson.dumps({"input_data": [{"values": images[:16].tolist()}]})
    response = client.invoke_endpoint(
        EndpointName="test-endpoint", Body=body, ContentType="application/json", Accept="application/json"
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ContentType"] == "application/json"
    document = orjson.loads(response["Body"].read())
    rows = document["predictions"][0]["values"]
    assert len(rows) == 16
    assert document["scoring_id"]
    predicted = np.array([row[0] for row in rows])
    assert (predicted == labels[:16]).mean() >= 0.5

    npy = client.invoke_endpoint(
        EndpointName="test-endpoint", Body=_npy(images[:16]), ContentType=NPY_TYPE, Accept=NPY_TYPE
    )
    assert npy["ContentType"] == NPY_TYPE
    probabilities = np.load(io.BytesIO(npy["Body"].read()), allow_pickle=False)
    assert probabilities.shape == (16, 10)
    assert probabilities.argmax(axis=1).tolist() == predicted.tolist()

    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="not-this-one", Body=body, ContentType="application/json")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "not-this-one" in str(info.value)

    with pytest.raises(ClientError) as info:  # the reason reaches boto3's exception text
        client.invoke_endpoint(EndpointName="test-endpoint", Body=b"{not json", ContentType="application/json")
    error = info.value.response["Error"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "ValidationError" and "malformed JSON" in error["Message"]
    assert "(ValidationError)" in str(info.value) and "malformed JSON" in str(info.value)


def test_npy_in_and_npy_out(http: httpx.Client, mnist_test_images) -> None:
    images, _ = mnist_test_images
    response = http.post(
        "/invocations", content=_npy(images), headers={"Content-Type": NPY_TYPE, "Accept": NPY_TYPE}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == NPY_TYPE
    assert response.headers["x-scoring-id"]
    probabilities = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert probabilities.shape == (64, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    as_json = http.post("/invocations", content=_npy(images), headers={"Content-Type": NPY_TYPE})
    assert as_json.status_code == 200
    rows = _rows(as_json)
    np.testing.assert_array_equal(np.array([row[1] for row in rows], dtype=np.float32), probabilities)


# ---------------------------------------------------------------------------------- bad requests


def _nan_npy() -> bytes:
    array = np.zeros((2, 28, 28), dtype=np.float32)
    array[1, 3, 3] = np.nan
    return _npy(array)


BAD_REQUESTS = {
    # id: (body, content type, accept, status, fragment of the message)
    "malformed-json": (b'{"instances": [[1, 2,', "application/json", None, 400, "malformed JSON"),
    "wrong-keys": (b'{"rows": [[0]]}', "application/json", None, 400, "got keys: rows"),
    "wrong-shape": (orjson.dumps([[0] * 783]), "application/json", None, 400, "N×784"),
    "string-values": (orjson.dumps([[["a"] * 28] * 28]), "application/json", None, 400, "numbers"),
    "numeric-strings": (orjson.dumps([["7"] * 784]), "application/json", None, 400, "numbers"),
    "null-values": (orjson.dumps([[None] * 784]), "application/json", None, 400, "numbers"),
    "ragged": (orjson.dumps([[0] * 784, [0] * 783]), "application/json", None, 400, "rectangular"),
    "second-row-not-object": (
        orjson.dumps({"input_data": [{"values": [[0] * 784]}, 7]}), "application/json", None, 400, "input_data"
    ),
    "nan-token": (b"[[" + b"0," * 783 + b"NaN]]", "application/json", None, 400, "malformed JSON"),
    "nan-npy": (_nan_npy(), NPY_TYPE, None, 400, "NaN"),
    "out-of-range": (orjson.dumps([[0] * 783 + [256]]), "application/json", None, 400, "0..255"),
    "zero-images": (_npy(np.zeros((0, 784), dtype=np.uint8)), NPY_TYPE, None, 400, "no images"),
    "pickle-npy": (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.", NPY_TYPE, None, 400, "npy"),
    "object-npy": (None, NPY_TYPE, None, 400, "npy"),  # built in the test (needs allow_pickle)
    "unknown-content-type": (b"1,2,3", "text/csv", None, 415, "text/csv"),
    "accept-html": (orjson.dumps([[0] * 784]), "application/json", "text/html", 406, "text/html"),
    "empty-json": (b"", "application/json", None, 400, "malformed JSON"),
    "empty-npy": (b"", NPY_TYPE, None, 400, "npy"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_a_4xx_json_error_and_the_server_keeps_serving(
    case: str, http: httpx.Client, mnist_test_images
) -> None:
    body, content_type, accept, status, fragment = BAD_REQUESTS[case]
    if body is None:
        buffer = io.BytesIO()
        array = np.empty((1, 784), dtype=object)
        array[:] = 0
        np.save(buffer, array, allow_pickle=True)
        body = buffer.getvalue()
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    response = http.post("/invocations", content=body, headers=headers)
    message = _assert_error(response, status)
    assert fragment in message
    assert "x-scoring-id" not in response.headers
    _assert_still_serving(http, mnist_test_images[0][0])


def test_body_over_6_mb_is_413(http: httpx.Client, mnist_test_images) -> None:
    body = b"[" + b"1," * 3_500_000 + b"1]"  # ~7 MB of JSON
    assert len(body) > 6 * 1024 * 1024
    response = http.post("/invocations", content=body, headers=JSON_HEADERS)
    message = _assert_error(response, 413)
    assert "limit" in message and str(6 * 1024 * 1024) in message
    _assert_still_serving(http, mnist_test_images[0][0])


def test_urllib_sending_a_whole_7_mb_body_before_reading_gets_the_413(endpoint: dict[str, Any], mnist_test_images) -> None:
    """urllib writes the whole body, then reads: the server must not close on unread data
    (the kernel would reset the connection and the client would never see the 413)."""
    import urllib.error
    import urllib.request

    body = b"[" + b"1," * 3_650_000 + b"1]"  # ~7 MB
    assert len(body) > 7_000_000
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(3):
        request = urllib.request.Request(f"{endpoint['url']}/invocations", data=body, headers=JSON_HEADERS, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(request, timeout=60)
        assert info.value.code == 413
        document = orjson.loads(info.value.read())
        assert "limit" in document["message"] and info.value.headers["x-amzn-ErrorType"] == "ValidationError"
    with _client(endpoint) as client:
        _assert_still_serving(client, mnist_test_images[0][0])


def test_chunked_body_over_6_mb_is_413(http: httpx.Client, mnist_test_images) -> None:
    """Without a Content-Length the server counts the streamed bytes."""

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(70):
            yield b"1," * 50_000
        yield b"1]"

    response = http.post("/invocations", content=chunks(), headers=JSON_HEADERS)
    assert "content-length" not in response.request.headers
    _assert_error(response, 413)
    _assert_still_serving(http, mnist_test_images[0][0])


def test_body_just_under_the_limit_is_read(http: httpx.Client) -> None:
    body = b"[" + b"1," * 3_000_000 + b"1]"  # ~6 MB minus a bit: read, then rejected for its shape
    assert len(body) < 6 * 1024 * 1024
    response = http.post("/invocations", content=body, headers=JSON_HEADERS)
    assert "N×784" in _assert_error(response, 400)


def test_unknown_route_and_method(http: httpx.Client, mnist_test_images) -> None:
    assert http.get("/does-not-exist").status_code == 404
    assert http.post("/predict", content=b"[]", headers=JSON_HEADERS).status_code == 404
    assert http.get("/invocations").status_code == 405
    _assert_still_serving(http, mnist_test_images[0][0])


# --------------------------------------------------------------------------------------- metrics


def _request_counts(client: httpx.Client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "modelcycle_requests_total" in response.text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name == "modelcycle_requests":
            for sample in family.samples:
                if sample.name == "modelcycle_requests_total":
                    assert sample.labels["endpoint"] == "test-endpoint"
                    counts[sample.labels["code"]] = sample.value
    return counts


def test_metrics_count_requests_by_status(http: httpx.Client, mnist_test_images) -> None:
    images, _ = mnist_test_images
    before = _request_counts(http)
    for _ in range(3):
        assert http.post("/invocations", content=orjson.dumps(images[0].tolist()), headers=JSON_HEADERS).status_code == 200
    for _ in range(2):
        assert http.post("/invocations", content=b"{", headers=JSON_HEADERS).status_code == 400
    assert http.post("/invocations", content=b"x", headers={"Content-Type": "text/csv"}).status_code == 415
    after = _request_counts(http)
    assert after["200"] - before.get("200", 0.0) == 3
    assert after["400"] - before.get("400", 0.0) == 2
    assert after["415"] - before.get("415", 0.0) == 1
    text = http.get("/metrics").text
    assert 'modelcycle_requests_total{code="200",endpoint="test-endpoint"}' in text
    assert 'modelcycle_requests_total{code="400",endpoint="test-endpoint"}' in text
    assert "modelcycle_records_total" in text and "modelcycle_request_seconds_bucket" in text


# ------------------------------------------------------------------------------------------ auth


@pytest.fixture(scope="module")
def auth_endpoint(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    record = start_endpoint(
        "auth-endpoint", trained_model_dir, tmp_path_factory.mktemp("auth-endpoint"), token="s3cret"
    )
    try:
        yield record
    finally:
        stop_endpoint(record)
        assert not process_alive(record["pid"])


def test_bearer_token_is_required(auth_endpoint: dict[str, Any], mnist_test_images) -> None:
    assert auth_endpoint["auth"] is True
    body = orjson.dumps(mnist_test_images[0][0].tolist())
    with _client(auth_endpoint) as client:
        assert client.get("/ping").status_code == 200  # health checks stay open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Bearer s3cret2"}, {"Authorization": "Basic czNjcmV0"}):
            response = client.post("/invocations", content=body, headers={**JSON_HEADERS, **headers})
            assert "bearer token" in _assert_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
            runtime = client.post("/endpoints/auth-endpoint/invocations", content=body,
                                  headers={**JSON_HEADERS, **headers})
            _assert_error(runtime, 401)
            _assert_error(client.get("/metrics", headers=headers), 401)

        good = {**JSON_HEADERS, "Authorization": "Bearer s3cret"}
        response = client.post("/invocations", content=body, headers=good)
        assert response.status_code == 200, response.text
        assert len(_rows(response)) == 1
        runtime = client.post("/endpoints/auth-endpoint/invocations", content=body, headers=good)
        assert runtime.status_code == 200
        metrics = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert metrics.status_code == 200
        assert 'code="401"' in metrics.text and 'code="200"' in metrics.text


def test_token_is_not_on_the_command_line(auth_endpoint: dict[str, Any]) -> None:
    cmdline = Path(f"/proc/{auth_endpoint['pid']}/cmdline").read_bytes()
    assert b"modelcycle.platforms.local.server" in cmdline
    assert b"s3cret" not in cmdline


# -------------------------------------------------------------------------------------- loopback


def test_is_loopback() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", ""):
        assert not is_loopback(host), host


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_binding_beyond_loopback_without_a_token_is_refused(
    host: str, trained_model_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MODELCYCLE_ENDPOINT_TOKEN"}
    ready = tmp_path / "x.ready.json"
    port = _free_port()
    command = [
        sys.executable, "-m", "modelcycle.platforms.local.server", "--model-dir", str(trained_model_dir),
        "--name", "x", "--host", host, "--port", str(port), "--ready-file", str(ready),
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    message = stderr.decode()
    assert process.returncode != 0
    assert "token" in message and host in message
    assert "MODELCYCLE_ENDPOINT_TOKEN" in message
    assert "Traceback" not in message  # a refusal, not a crash (e.g. while binding)
    assert not ready.exists()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens on the port


# ----------------------------------------------------------------------------------- concurrency


def test_concurrent_clients_all_get_200(endpoint: dict[str, Any], mnist_test_images) -> None:
    images, _ = mnist_test_images
    bodies = [orjson.dumps(images[i].tolist()) for i in range(16)]
    expected = {}
    with _client(endpoint) as client:
        for i, body in enumerate(bodies):
            response = client.post("/invocations", content=body, headers=JSON_HEADERS)
            expected[i] = _rows(response)[0][0]

    def worker(index: int) -> list[tuple[int, int | None]]:
        results = []
        with _client(endpoint) as client:
            for _ in range(20):
                response = client.post("/invocations", content=bodies[index], headers=JSON_HEADERS)
                label = response.json()["predictions"][0]["values"][0][0] if response.status_code == 200 else None
                results.append((response.status_code, label))
        return results

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(worker, range(16)))
    assert sum(len(results) for results in outcomes) == 320
    for index, results in enumerate(outcomes):
        assert all(status == 200 for status, _ in results), results
        assert all(label == expected[index] for _, label in results)
    with _client(endpoint) as client:
        assert client.get("/ping").status_code == 200
