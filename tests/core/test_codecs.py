"""Unit tests of modelcycle.core.serving.codecs: every accepted request form, every rejection with
its HTTP status, and the response encodings (OpenScale-shaped JSON and NPY)."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import orjson
import pytest

from modelcycle.core.errors import ServingError
from modelcycle.core.serving.codecs import (
    JSON,
    NPY,
    conform_images,
    decode_request,
    encode_response,
    media_type,
    negotiate_accept,
)

MNIST = (1, 28, 28)
RGB = (3, 32, 32)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Three random raw uint8 images ``(N, 28, 28)`` including both range ends."""
    rng = np.random.default_rng(7)
    batch = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    batch[0, 0, 0], batch[0, 0, 1] = 0, 255
    return batch


@pytest.fixture(scope="module")
def expected(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32).reshape(3, 1, 28, 28)


def _json(document: object) -> bytes:
    return orjson.dumps(document)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _rejected(body: bytes, content_type: str = JSON, shape: tuple[int, int, int] = MNIST) -> ServingError:
    with pytest.raises(ServingError) as info:
        decode_request(body, content_type, shape)
    return info.value


# ---------------------------------------------------------------------------------- accepted JSON


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda x: {"input_data": [{"values": x.tolist()}]}, id="input_data-Nx28x28"),
        pytest.param(lambda x: {"input_data": [{"values": x[:, None].tolist()}]}, id="input_data-Nx1x28x28"),
        pytest.param(lambda x: {"input_data": [{"values": x[..., None].tolist()}]}, id="input_data-Nx28x28x1"),
        pytest.param(lambda x: {"input_data": [{"values": x.reshape(len(x), 784).tolist()}]}, id="input_data-Nx784"),
        pytest.param(lambda x: {"instances": x.tolist()}, id="instances-Nx28x28"),
        pytest.param(lambda x: {"instances": x[:, None].tolist()}, id="instances-Nx1x28x28"),
        pytest.param(lambda x: {"instances": x.reshape(len(x), 784).tolist()}, id="instances-Nx784"),
        pytest.param(lambda x: x.tolist(), id="bare-Nx28x28"),
        pytest.param(lambda x: x[..., None].tolist(), id="bare-Nx28x28x1"),
        pytest.param(lambda x: x.reshape(len(x), 784).tolist(), id="bare-Nx784"),
        pytest.param(
            lambda x: {"input_data": [{"values": x[:1].tolist()}, {"values": x[1:].tolist()}]},
            id="input_data-two-rows",
        ),
    ],
)
def test_every_json_form_decodes_to_the_same_pixels(build, images: np.ndarray, expected: np.ndarray) -> None:
    decoded = decode_request(_json(build(images)), JSON, MNIST)
    assert decoded.dtype == np.float32
    assert decoded.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda img: img.tolist(), id="bare-28x28"),
        pytest.param(lambda img: img[None].tolist(), id="bare-1x28x28"),
        pytest.param(lambda img: {"instances": img.tolist()}, id="instances-28x28"),
        pytest.param(lambda img: {"input_data": [{"values": img.tolist()}]}, id="input_data-28x28"),
    ],
)
def test_a_single_image_decodes_to_a_batch_of_one(build, images: np.ndarray) -> None:
    decoded = decode_request(_json(build(images[1])), JSON, MNIST)
    assert decoded.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(decoded[0, 0], images[1].astype(np.float32))


def test_float_pixels_and_content_type_parameters_are_accepted(images: np.ndarray, expected: np.ndarray) -> None:
    body = _json({"instances": (images.astype(np.float64) + 0.0).tolist()})
    for content_type in ("application/json; charset=utf-8", "Application/JSON", ""):
        np.testing.assert_array_equal(decode_request(body, content_type, MNIST), expected)
    half = decode_request(_json([[[127.5] * 28] * 28]), JSON, MNIST)
    assert float(half.max()) == 127.5


def test_channels_last_color_images_are_transposed_to_channels_first() -> None:
    rng = np.random.default_rng(3)
    chw = rng.integers(0, 256, (2, *RGB), dtype=np.uint8)
    hwc = chw.transpose(0, 2, 3, 1)
    for body in (_json(hwc.tolist()), _json(chw.tolist()), _json(chw.reshape(2, -1).tolist())):
        np.testing.assert_array_equal(decode_request(body, JSON, RGB), chw.astype(np.float32))
    single = decode_request(_json(hwc[0].tolist()), JSON, RGB)
    np.testing.assert_array_equal(single, chw[:1].astype(np.float32))


def test_boundary_pixel_values_are_accepted() -> None:
    decoded = decode_request(_json([[[0] * 28] * 27 + [[255] * 28]]), JSON, MNIST)
    assert float(decoded.min()) == 0.0 and float(decoded.max()) == 255.0


# ----------------------------------------------------------------------------------- accepted NPY


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda x: x, id="uint8-Nx28x28"),
        pytest.param(lambda x: x[:, None], id="uint8-Nx1x28x28"),
        pytest.param(lambda x: x[..., None], id="uint8-Nx28x28x1"),
        pytest.param(lambda x: x.reshape(len(x), 784), id="uint8-Nx784"),
        pytest.param(lambda x: x.astype(np.float32), id="float32"),
        pytest.param(lambda x: x.astype(np.float64), id="float64"),
        pytest.param(lambda x: x.astype(np.int16), id="int16"),
        pytest.param(lambda x: x.astype(">f4"), id="big-endian-float32"),
        pytest.param(lambda x: np.asfortranarray(x), id="fortran-order"),
    ],
)
def test_npy_forms_decode_to_the_same_pixels(transform, images: np.ndarray, expected: np.ndarray) -> None:
    decoded = decode_request(_npy(transform(images)), NPY, MNIST)
    assert decoded.dtype == np.float32 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, expected)


def test_npy_single_image(images: np.ndarray) -> None:
    decoded = decode_request(_npy(images[2]), "application/x-npy; v=1", MNIST)
    assert decoded.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(decoded[0, 0], images[2].astype(np.float32))


# ------------------------------------------------------------------------------- JSON rejections


@pytest.mark.parametrize(
    "body",
    [b"{", b"[1, 2", b"not json", b"\xff\xfe", b"", b"[[NaN]]", b"[Infinity]", b"{'instances': []}"],
    ids=["open-brace", "unterminated", "text", "bad-utf8", "empty", "NaN-token", "Infinity-token", "single-quotes"],
)
def test_malformed_json_is_400(body: bytes) -> None:
    error = _rejected(body)
    assert error.status_code == 400
    assert "malformed JSON" in str(error)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"data": [[0] * 784]}, "got keys: data"),
        ({}, "got keys: none"),
        ({"inputs": [], "rows": []}, "got keys: inputs, rows"),
        ({"input_data": {"values": [[0] * 784]}}, '"input_data" must be a list'),
        ({"input_data": []}, '"input_data" must be a list'),
        ({"input_data": [[0] * 784]}, '"input_data" must be a list'),
        ({"input_data": [{"fields": ["x"], "vals": [[0] * 784]}]}, 'has no "values" key'),
        ({"input_data": [{"values": [[0] * 784]}, "oops"]}, '"input_data"[1]'),
        ({"input_data": [{"values": [[0] * 784]}, {"values": 5}]}, '"input_data"[1]'),
        ({"input_data": [{"values": [[0] * 784]}, {"other": [[0] * 784]}]}, '"input_data"[1]'),
        ("pixels", "must be an object or an array"),
        (42, "must be an object or an array"),
        (None, "must be an object or an array"),
    ],
    ids=[
        "unknown-key", "empty-object", "two-unknown-keys", "input_data-object", "input_data-empty",
        "input_data-not-objects", "input_data-no-values", "second-row-string", "second-row-values-number",
        "second-row-no-values", "json-string", "json-number", "json-null",
    ],
)
def test_wrong_json_structure_is_400(document: object, fragment: str) -> None:
    error = _rejected(_json(document))
    assert error.status_code == 400
    assert fragment in str(error)


@pytest.mark.parametrize(
    "values",
    [
        [[0] * 28] * 27 + [[0] * 27],  # ragged last row
        [[[0] * 28] * 28, [[0] * 28] * 27],  # ragged images
        [[["a"] * 28] * 28],  # strings
        [[["12"] * 28] * 28],  # numeric strings are strings too
        [[[0] * 27 + ["x"]] + [[0] * 28] * 27],  # one string among numbers
        [[[None] * 28] * 28],  # nulls
        [[0] * 783 + [None]],  # one null among numbers
        [[[{"v": 1}] * 28] * 28],  # objects
        [[[True] * 28] * 28],  # booleans are not pixel values
    ],
    ids=["ragged-rows", "ragged-images", "strings", "numeric-strings", "one-string", "nulls", "one-null",
         "objects", "booleans"],
)
def test_non_numeric_or_ragged_values_are_400(values: object) -> None:
    error = _rejected(_json({"instances": values}))
    assert error.status_code == 400
    assert "rectangular array of numbers" in str(error)


@pytest.mark.parametrize(
    "shape",
    [(784,), (10,), (2, 28, 27), (2, 783), (2, 2, 28, 28), (2, 28, 28, 3), (1, 1, 1, 28, 28), ()],
    ids=lambda s: "x".join(map(str, s)) or "scalar",
)
def test_wrong_shape_is_400_naming_the_expected_shapes(shape: tuple[int, ...]) -> None:
    body = _json({"instances": np.zeros(shape, dtype=np.uint8).tolist()})
    error = _rejected(body)
    assert error.status_code == 400
    message = str(error)
    assert f"input has shape {list(shape)}" in message
    for expected in ("N×28×28", "N×1×28×28", "N×28×28×1", "N×784"):
        assert expected in message


def test_wrong_shape_message_for_color_images_names_color_shapes() -> None:
    error = _rejected(_json(np.zeros((2, 28, 28), dtype=np.uint8).tolist()), shape=RGB)
    assert error.status_code == 400
    assert "N×3×32×32" in str(error) and "N×32×32×3" in str(error) and "N×3072" in str(error)
    assert "N×32×32," not in str(error)  # the channel-less form only exists for one channel


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"]
)
def test_nan_or_infinite_pixels_are_400(bad: float) -> None:
    array = np.zeros((2, 28, 28), dtype=np.float32)
    array[1, 5, 5] = bad
    error = _rejected(_npy(array), NPY)
    assert error.status_code == 400
    assert "NaN or infinite" in str(error)
    with pytest.raises(ServingError, match="NaN or infinite") as info:
        conform_images(array, MNIST)
    assert info.value.status_code == 400


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_json_number_too_large_for_float32_is_400() -> None:
    values = [[0.0] * 783 + [1e39]]
    error = _rejected(_json(values))
    assert error.status_code == 400
    assert "NaN or infinite" in str(error)


@pytest.mark.parametrize(
    ("low", "high"), [(-1, 10), (0, 256), (-0.5, 0), (0, 1e6)], ids=["negative", "256", "small-negative", "huge"]
)
def test_pixels_outside_0_255_are_400(low: float, high: float) -> None:
    values = [[0.0] * 782 + [low, high]]
    error = _rejected(_json(values))
    assert error.status_code == 400
    message = str(error)
    assert "0..255" in message
    assert f"got {low:g}..{high:g}" in message


@pytest.mark.parametrize(
    "array", [np.zeros((0, 28, 28)), np.zeros((0, 784)), np.zeros((0, 1, 28, 28)), np.zeros((0, 28, 28, 1))],
    ids=["0x28x28", "0x784", "0x1x28x28", "0x28x28x1"],
)
def test_zero_images_are_400(array: np.ndarray) -> None:
    error = _rejected(_npy(array), NPY)
    assert error.status_code == 400
    assert "no images" in str(error)


def test_empty_json_list_is_400() -> None:
    for document in ([], {"instances": []}, {"input_data": [{"values": []}]}):
        assert _rejected(_json(document)).status_code == 400


@pytest.mark.parametrize(
    "content_type",
    ["text/csv", "text/plain", "application/xml", "image/png", "application/octet-stream", "application/jsonl"],
)
def test_unknown_content_type_is_415(content_type: str, images: np.ndarray) -> None:
    error = _rejected(_json(images.tolist()), content_type)
    assert error.status_code == 415
    assert content_type in str(error)
    assert JSON in str(error) and NPY in str(error)


# -------------------------------------------------------------------------------- NPY rejections


def test_npy_object_dtype_is_refused_400() -> None:
    array = np.empty((1, 784), dtype=object)
    array[:] = 1
    error = _rejected(_npy(array, allow_pickle=True), NPY)
    assert error.status_code == 400
    assert "not a valid .npy" in str(error)


class _Boom:
    """Unpickling this would run code; the decoder must never unpickle."""

    def __reduce__(self):  # noqa: D105
        return (pytest.fail, ("the NPY decoder unpickled a request body",))


@pytest.mark.parametrize(
    "body",
    [
        pickle.dumps(np.zeros((1, 28, 28))),
        pickle.dumps(_Boom()),
        pickle.dumps({"values": [[0] * 784]}),
    ],
    ids=["pickled-ndarray", "pickled-callable", "pickled-dict"],
)
def test_pickles_are_refused_400(body: bytes) -> None:
    error = _rejected(body, NPY)
    assert error.status_code == 400
    assert "not a valid .npy" in str(error)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, 28, 28), dtype=bool),
        np.zeros((1, 28, 28), dtype=np.complex64),
        np.full((1, 784), "1", dtype="<U1"),
        np.zeros((1, 28, 28), dtype=[("a", "u1"), ("b", "u1")]),
        np.zeros((1, 28, 28), dtype="timedelta64[s]"),
    ],
    ids=["bool", "complex", "unicode", "structured", "timedelta"],
)
def test_npy_non_numeric_dtypes_are_400(array: np.ndarray) -> None:
    error = _rejected(_npy(array), NPY)
    assert error.status_code == 400
    assert "must hold numbers" in str(error)


@pytest.mark.parametrize(
    "body",
    [b"", b"\x93NUMPY", _npy(np.zeros((2, 28, 28), dtype=np.uint8))[:-100], b"[[0]]", b"PK\x03\x04garbage"],
    ids=["empty", "magic-only", "truncated", "json-as-npy", "zip-garbage"],
)
def test_broken_npy_is_400(body: bytes) -> None:
    error = _rejected(body, NPY)
    assert error.status_code == 400


def test_npz_archive_is_400() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, images=np.zeros((1, 28, 28), dtype=np.uint8))
    error = _rejected(buffer.getvalue(), NPY)
    assert error.status_code == 400


def test_npy_wrong_shape_and_range_are_400() -> None:
    assert "expected one of" in str(_rejected(_npy(np.zeros((2, 27, 27), dtype=np.uint8)), NPY))
    assert "0..255" in str(_rejected(_npy(np.full((1, 784), 300, dtype=np.int32)), NPY))
    assert "0..255" in str(_rejected(_npy(np.full((1, 784), -1, dtype=np.int8)), NPY))


# ----------------------------------------------------------------------------- content negotiation


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, JSON),
        ("", JSON),
        ("application/json", JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        ("application/json; charset=utf-8", JSON),
        ("application/x-npy", NPY),
        ("Application/X-NPY", NPY),
        ("text/html, application/x-npy", NPY),
        ("text/html, */*;q=0.1", JSON),
    ],
)
def test_negotiate_accept(accept: str | None, chosen: str) -> None:
    assert negotiate_accept(accept) == chosen


@pytest.mark.parametrize("accept", ["text/html", "text/csv, image/png", "application/xml"])
def test_unacceptable_accept_is_406(accept: str) -> None:
    with pytest.raises(ServingError) as info:
        negotiate_accept(accept)
    assert info.value.status_code == 406
    assert accept in str(info.value)
    assert JSON in str(info.value) and NPY in str(info.value)


def test_media_type() -> None:
    assert media_type("Application/JSON; charset=utf-8") == JSON
    assert media_type(" application/x-npy ") == NPY
    assert media_type(None) == "" and media_type("") == ""


# ---------------------------------------------------------------------------------------- output


def _probabilities(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def test_json_output_has_the_openscale_shape_and_scoring_id() -> None:
    probabilities = _probabilities(5)
    body, content_type = encode_response(probabilities, JSON, "abc123")
    assert content_type == JSON
    document = orjson.loads(body)
    assert set(document) == {"predictions", "scoring_id"}
    assert document["scoring_id"] == "abc123"
    assert len(document["predictions"]) == 1
    prediction = document["predictions"][0]
    assert prediction["fields"] == ["prediction", "probability"]
    assert len(prediction["values"]) == 5
    for row, expected in zip(prediction["values"], probabilities):
        label, probs = row
        assert isinstance(label, int) and not isinstance(label, bool)
        assert label == int(expected.argmax())
        assert len(probs) == 10 and all(isinstance(p, float) for p in probs)
        np.testing.assert_array_equal(np.asarray(probs, dtype=np.float32), expected)
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-5)


def test_json_output_without_scoring_id_has_no_key() -> None:
    body, _ = encode_response(_probabilities(1), JSON)
    document = orjson.loads(body)
    assert "scoring_id" not in document
    assert len(document["predictions"][0]["values"]) == 1


def test_npy_output_round_trips() -> None:
    probabilities = _probabilities(7, seed=1)
    body, content_type = encode_response(probabilities.astype(np.float64), NPY, "ignored")
    assert content_type == NPY
    decoded = np.load(io.BytesIO(body), allow_pickle=False)
    assert decoded.dtype == np.float32 and decoded.shape == (7, 10)
    np.testing.assert_array_equal(decoded, probabilities)


def test_decode_then_encode_round_trip(images: np.ndarray) -> None:
    """A request decoded, 'scored' and encoded keeps one answer per image in order."""
    pixels = decode_request(_npy(images), NPY, MNIST)
    probabilities = np.zeros((len(pixels), 10), dtype=np.float32)
    probabilities[np.arange(len(pixels)), [3, 1, 4]] = 1.0
    document = orjson.loads(encode_response(probabilities, JSON, "x")[0])
    assert [row[0] for row in document["predictions"][0]["values"]] == [3, 1, 4]


def test_a_single_channels_last_image_is_accepted(images: np.ndarray, expected: np.ndarray) -> None:
    decoded = decode_request(_json({"input_data": [{"values": images[0][..., None].tolist()}]}), JSON, MNIST)
    assert decoded.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(decoded, expected[:1])
