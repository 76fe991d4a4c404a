"""Dynamic batching must hand every concurrent request exactly its own rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import orjson


def _score(url: str, images: np.ndarray) -> list[list[float]]:
    body = orjson.dumps({"input_data": [{"values": images}]}, option=orjson.OPT_SERIALIZE_NUMPY)
    response = httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    return [row[1] for row in response.json()["predictions"][0]["values"]]


def test_concurrent_requests_of_different_sizes_get_their_own_predictions(
    endpoint: dict[str, Any], mnist_test_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test_images[0]
    slices = [images[start : start + size] for start, size in zip(range(0, 60, 5), [1, 2, 3, 4, 5] * 3)]
    expected = [_score(endpoint["url"], chunk) for chunk in slices]
    with ThreadPoolExecutor(max_workers=len(slices)) as pool:
        for _ in range(5):
            got = list(pool.map(lambda chunk: _score(endpoint["url"], chunk), slices))
            for want, have in zip(expected, got):
                assert len(want) == len(have)
                np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=1e-4, atol=1e-6)
