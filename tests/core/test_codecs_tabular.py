"""The scoring codecs beyond 28×28 grayscale: tabular records by field name (every client
mistake a 400 naming the field), images of any size and channel count, ``prediction_label``."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest

from modelcycle.core.artifacts import FieldSchema, InputSchema
from modelcycle.core.errors import ServingError
from modelcycle.core.serving.codecs import NPY, JSON, class_names, conform_images, decode_request, encode_response

SCHEMA = InputSchema(
    kind="tabular", shape=(3,), dtype="float32", value_range=(-1e30, 1e30),
    fields=(FieldSchema(name="age"), FieldSchema(name="city", kind="categorical", categories=("Paris", "Oslo", "1")),
            FieldSchema(name="income")),
)


def _json(document: object) -> np.ndarray:
    return decode_request(orjson.dumps(document), JSON, SCHEMA)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _refused(document: object) -> str:
    with pytest.raises(ServingError) as caught:
        _json(document)
    assert caught.value.status_code == 400
    return str(caught.value)


def test_openscale_fields_in_any_order_map_to_the_model_column_order() -> None:
    records = _json({"input_data": [{"fields": ["income", "city", "age"], "values": [[1000.5, "Oslo", 31], [2.0, "Paris", 40]]}]})
    assert records.dtype == np.float32
    np.testing.assert_array_equal(records, [[31, 1, 1000.5], [40, 0, 2.0]])


def test_several_input_data_entries_may_name_fields_differently() -> None:
    records = _json({"input_data": [{"fields": ["age", "city", "income"], "values": [[1, "Paris", 2]]},
                                    {"fields": ["city", "income", "age"], "values": [["Oslo", 5, 4]]}]})
    np.testing.assert_array_equal(records, [[1, 0, 2], [4, 1, 5]])


def test_instances_objects_and_positional_rows() -> None:
    objects = _json({"instances": [{"city": "Oslo", "income": 3, "age": 9}]})
    np.testing.assert_array_equal(objects, [[9, 1, 3]])
    np.testing.assert_array_equal(_json([[9, "Oslo", 3]]), [[9, 1, 3]])
    np.testing.assert_array_equal(_json({"input_data": [{"values": [[9, "Oslo", 3]]}]}), [[9, 1, 3]])


def test_a_number_is_accepted_when_its_text_is_a_category() -> None:
    np.testing.assert_array_equal(_json([[9, 1, 3], [9, 1.0, 3]]), [[9, 2, 3], [9, 2, 3]])


def test_missing_and_unknown_fields_are_named() -> None:
    message = _refused({"input_data": [{"fields": ["age", "city"], "values": [[1, "Paris"]]}]})
    assert "missing field 'income'" in message
    message = _refused({"input_data": [{"fields": ["age", "city", "income", "zip"], "values": [[1, "Paris", 2, 3]]}]})
    assert "unknown field 'zip'" in message and "age, city, income" in message
    assert "missing field 'age'" in _refused({"instances": [{"city": "Oslo", "income": 3}]})
    assert "given twice" in _refused({"input_data": [{"fields": ["age", "age", "city"], "values": [[1, 1, "Oslo"]]}]})


def test_unknown_category_names_field_value_and_the_allowed_ones() -> None:
    message = _refused({"instances": [{"city": "Rome", "income": 3, "age": 9}]})
    assert "field 'city'" in message and "'Rome'" in message
    assert "allowed: 'Paris', 'Oslo', '1'" in message


def test_numerical_fields_need_numbers() -> None:
    for bad in ("12", None, True, [1]):
        message = _refused({"instances": [{"city": "Oslo", "income": bad, "age": 9}]})
        assert "field 'income' is numerical" in message, message


def test_bad_shapes_are_400s() -> None:
    assert "expected 3" in _refused([[1, "Oslo"]])
    assert "has 2 values" in _refused({"input_data": [{"fields": ["age", "city", "income"], "values": [[1, "Oslo"]]}]})
    assert "no records" in _refused({"instances": []})
    assert '"input_data"' in _refused({"input_data": {}})
    assert "got keys: data" in _refused({"data": []})


def test_npy_records_hold_category_indexes() -> None:
    records = decode_request(_npy(np.array([[1.0, 2.0, 3.0]], np.float64)), NPY, SCHEMA)
    np.testing.assert_array_equal(records, [[1, 2, 3]])
    np.testing.assert_array_equal(decode_request(_npy(np.array([1.0, 0.0, 3.0])), NPY, SCHEMA), [[1, 0, 3]])
    for bad, expected in ((np.array([[1.0, 3.0, 3.0]]), "field 'city' is categorical"),
                          (np.array([[1.0, 0.5, 3.0]]), "field 'city' is categorical"),
                          (np.array([[np.nan, 0.0, 3.0]]), "field 'age' holds NaN"),
                          (np.zeros((2, 4)), "expected N×3")):
        with pytest.raises(ServingError, match=expected):
            decode_request(_npy(bad), NPY, SCHEMA)


@pytest.mark.parametrize("c,h,w", [(3, 20, 36), (1, 17, 9), (4, 8, 8)])
def test_images_of_any_size_and_channel_count(c: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, c, h, w)).astype(np.float32)
    schema = InputSchema(shape=(c, h, w))
    for layout in (images, images.transpose(0, 2, 3, 1), images.reshape(2, -1)):
        np.testing.assert_array_equal(decode_request(_npy(layout), NPY, schema), images)
    np.testing.assert_array_equal(decode_request(orjson.dumps(images[0].transpose(1, 2, 0).tolist()), JSON, schema),
                                  images[:1])
    with pytest.raises(ServingError, match=f"N×{c}×{h}×{w}"):
        conform_images(np.zeros((2, c, w + 1, h)), (c, h, w))


def test_prediction_label_only_for_named_classes() -> None:
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)
    named = orjson.loads(encode_response(probabilities, JSON, "s", ["benign", "malignant"])[0])["predictions"][0]
    assert named["fields"] == ["prediction", "prediction_label", "probability"]
    assert [row[:2] for row in named["values"]] == [[1, "malignant"], [0, "benign"]]
    digits = orjson.loads(encode_response(probabilities, JSON, "s", ["0", "1"])[0])["predictions"][0]
    assert digits["fields"] == ["prediction", "probability"] and digits["values"][0][0] == 1
    assert class_names(["0", "1", "2"]) is None and class_names(["cat", "dog"]) == ["cat", "dog"]
