"""A modelcycle ``model.tar.gz`` served through AWS's inference toolkit (``sagemaker-inference``).

SageMaker's framework serving containers hand every request to the toolkit's ``Transformer``,
which imports ``code/inference.py`` and answers a ``BaseInferenceToolkitError`` with its status,
any other exception with 500. Here the real archive is extracted as the container extracts it
to ``/opt/ml/model`` and served by the real ``Transformer`` in-process; the model server's
per-request context (what MMS/TorchServe pass: system properties, request headers, the
response status and content type the handler sets) is the small stand-in below. The same bad
requests go to a live local endpoint serving the same model: the statuses must be equal.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

pytest.importorskip("sagemaker_inference", reason="install the test extra: pip install -e '.[test]'")

JSON, NPY = "application/json", "application/x-npy"


class _RequestProcessor:
    """One request's headers, as the model server hands them to the handler service."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    def get_request_properties(self) -> dict[str, str]:
        return self._headers

    def get_request_property(self, key: str) -> str | None:
        return self._headers.get(key)


class _ServerContext:
    """The model server's context for one request: ``system_properties['model_dir']``,
    ``request_processor[0]`` and what the handler sets on the response."""

    def __init__(self, model_dir: Path, headers: dict[str, str]) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 1,
                                  "server_name": "MMS", "server_version": "1.1.11"}
        self.request_processor = [_RequestProcessor(headers)]
        self.status: tuple[int, str] | None = None
        self.content_type: str | None = None

    def set_response_status(self, code: int = 200, phrase: str = "") -> None:
        self.status = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type = value


@pytest.fixture(scope="module")
def served(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``call(body, content_type, accept) -> (status, body, content_type)`` through the toolkit's
    ``Transformer`` serving the extracted ``model.tar.gz``."""
    from sagemaker_inference.default_handler_service import DefaultHandlerService

    from modelcycle.core.artifacts import extract_archive

    model_dir = extract_archive(trained_model_dir.parent / "model.tar.gz", tmp_path_factory.mktemp("opt-ml-model"))
    assert (model_dir / "code" / "inference.py").is_file()
    sys.path.insert(0, str(model_dir / "code"))  # the container's PYTHONPATH holds code/
    sys.modules.pop("inference", None)
    service = DefaultHandlerService()
    service.initialize(_ServerContext(model_dir, {}))

    def call(body: bytes, content_type: str, accept: str = JSON) -> tuple[int, bytes, str | None]:
        context = _ServerContext(model_dir, {"Content-Type": content_type, "Accept": accept})
        answer = service.handle([{"body": bytearray(body)}], context)
        status = context.status[0] if context.status else 200
        payload = answer[0]
        return status, payload.encode() if isinstance(payload, str) else bytes(payload), context.content_type

    try:
        yield call
    finally:
        sys.path.remove(str(model_dir / "code"))
        sys.modules.pop("inference", None)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_good_json_and_npy_requests_score_as_the_local_pipeline(served: Any, trained_model_dir: Path,
                                                                mnist_test_images: Any) -> None:
    from modelcycle.core.serving.pipeline import InferencePipeline

    images, labels = mnist_test_images
    pipeline = InferencePipeline(trained_model_dir)
    expected = pipeline.predict(pipeline.decode(_npy(images), NPY))

    status, body, content_type = served(orjson.dumps({"instances": images.tolist()}), JSON)
    assert (status, content_type) == (200, JSON), body[:300]
    rows = orjson.loads(body)["predictions"][0]["values"]
    assert [row[0] for row in rows] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array([row[1] for row in rows]), expected, atol=1e-6)
    assert (expected.argmax(axis=1) == labels).mean() > 0.5  # a (briefly) trained model, not chance (0.1)

    status, body, content_type = served(_npy(images), NPY, accept=NPY)
    assert (status, content_type) == (200, NPY)
    np.testing.assert_allclose(np.load(io.BytesIO(body), allow_pickle=False), expected, atol=1e-6)


BAD_REQUESTS = {
    "malformed JSON": (b'{"instances": [1, 2', JSON, JSON),
    "JSON without input_data or instances": (b'{"rows": []}', JSON, JSON),
    "wrong image shape": (orjson.dumps({"instances": [[0.0] * 10]}), JSON, JSON),
    "strings for pixels": (orjson.dumps({"instances": [["a"] * 784]}), JSON, JSON),
    "not an npy file": (b"\x93NUMPY garbage", NPY, JSON),
    "unsupported content type": (b"1,2,3", "text/csv", JSON),
    "unsupported accept": (orjson.dumps({"instances": [[0.0] * 784]}), JSON, "text/html"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_the_local_endpoints_4xx_not_500(served: Any, endpoint: dict[str, Any], case: str) -> None:
    body, content_type, accept = BAD_REQUESTS[case]
    local = httpx.post(f"{endpoint['url']}/invocations", content=body,
                       headers={"Content-Type": content_type, "Accept": accept}, timeout=30)
    assert 400 <= local.status_code < 500, local.text
    status, answer, _ = served(body, content_type, accept)
    assert status == local.status_code, answer[:500]
    assert orjson.loads(local.content)["message"].encode() in answer  # the same reason, not a stack trace only
