"""Tabular scoring requests: named fields in, raw ``(N, F)`` float32 records out.

A tabular model's :class:`~modelcycle.core.artifacts.InputSchema` names its fields in the model's
column order. Clients send records in any of these forms (JSON):

* OpenScale's ``{"input_data": [{"fields": ["age", "city", ...], "values": [[31, "Paris", ...], ...]}]}``
  — fields by name, in any order (several ``input_data`` entries may name them differently);
* ``{"instances": [{"age": 31, "city": "Paris", ...}, ...]}`` — one object per record;
* positional rows in the model's field order: ``{"input_data": [{"values": [[...], ...]}]}``,
  ``{"instances": [[...], ...]}`` or a bare ``[[...], ...]``.

A numerical field takes a number. A categorical field takes one of its categories as text (a
number is accepted when its text is a category, e.g. ``1`` for the category ``"1"``) and is
carried on as the category's index. NPY bodies are ``(N, F)`` (or one ``(F,)`` record) of numbers,
categorical columns holding the index.

Every mistake is a :class:`~modelcycle.core.errors.ServingError` (400) naming the field, and for
an unknown category the allowed ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcycle.core.errors import ServingError

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.artifacts import FieldSchema, InputSchema

__all__ = ["records_document", "records_from_document", "conform_records"]

_SHOWN_CATEGORIES = 20


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _category_index(field: FieldSchema, index: dict[str, int], value: Any, where: str) -> int:
    if isinstance(value, str):
        found = index.get(value)
    elif _is_number(value):
        found = index.get(str(value))
        if found is None and isinstance(value, float) and value.is_integer():
            found = index.get(str(int(value)))
    else:
        found = None
    if found is None:
        shown = ", ".join(repr(c) for c in field.categories[:_SHOWN_CATEGORIES])
        more = f" (and {len(field.categories) - _SHOWN_CATEGORIES} more)" if len(field.categories) > _SHOWN_CATEGORIES else ""
        raise ServingError(
            f"{where}: field '{field.name}' has unknown category {value!r}; allowed: {shown}{more}", 400)
    return found


def _column(field: FieldSchema, values: Sequence[Any], start: int) -> np.ndarray:
    """One field's values of rows ``start..`` as float32 (categories as their index)."""
    if field.kind == "categorical":
        index = {category: i for i, category in enumerate(field.categories)}
        return np.array([_category_index(field, index, v, f"record {start + i}") for i, v in enumerate(values)],
                        dtype=np.float32)
    for i, value in enumerate(values):
        if not _is_number(value) or not math.isfinite(value):
            raise ServingError(
                f"record {start + i}: field '{field.name}' is numerical and must be a finite number, got {value!r}", 400)
    return np.asarray(values, dtype=np.float32)


def _check_fields(fields: Any, schema: InputSchema, where: str) -> list[int]:
    """Positions in ``fields`` of each schema field, in the schema's order."""
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise ServingError(f'{where}: "fields" must be a list of field names', 400)
    expected = schema.field_names
    seen: set[str] = set()
    duplicates = [f for f in fields if f in seen or seen.add(f)]  # type: ignore[func-returns-value]
    if duplicates:
        raise ServingError(f"{where}: field '{duplicates[0]}' is given twice", 400)
    unknown = [f for f in fields if f not in expected]
    if unknown:
        raise ServingError(
            f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(repr(f) for f in unknown)}; "
            f"the model's fields are {', '.join(expected)}", 400)
    missing = [f for f in expected if f not in seen]
    if missing:
        raise ServingError(
            f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(f) for f in missing)} "
            f"(the model needs {', '.join(expected)})", 400)
    return [fields.index(name) for name in expected]


def _rows_block(rows: Any, positions: list[int] | None, schema: InputSchema, where: str, start: int) -> np.ndarray:
    """Rows (lists) → ``(n, F)`` float32; ``positions`` maps schema fields to row positions."""
    if not isinstance(rows, list):
        raise ServingError(f'{where}: "values" must be a list of records (lists of values)', 400)
    size = len(schema.fields) if positions is None else len(positions)
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise ServingError(f"record {start + i}: must be a list of values, got {type(row).__name__}", 400)
        if len(row) != size:
            named = "its fields" if positions is not None else f"({', '.join(schema.field_names)}) — or send \"fields\" to name them"
            raise ServingError(f"record {start + i}: has {len(row)} values; expected {size} {named}", 400)
    columns = []
    for j, field in enumerate(schema.fields):
        p = j if positions is None else positions[j]
        columns.append(_column(field, [row[p] for row in rows], start))
    if not rows:
        return np.zeros((0, len(schema.fields)), np.float32)
    return np.stack(columns, axis=1)


def _objects_block(items: list[Any], schema: InputSchema, start: int) -> np.ndarray:
    rows = []
    for i, item in enumerate(items):
        _check_fields(list(item), schema, f"record {start + i}")
        rows.append([item[name] for name in schema.field_names])
    return _rows_block(rows, None, schema, "instances", start)


def records_from_document(document: Any, schema: InputSchema) -> np.ndarray:
    """A decoded JSON body → raw ``(N, F)`` float32 records (see the module docstring).

    Raises:
        ServingError: 400 naming the missing/unknown field, the bad value or the bad shape.
    """
    blocks: list[np.ndarray] = []
    if isinstance(document, dict) and "input_data" in document:
        entries = document["input_data"]
        if not isinstance(entries, list) or not entries:
            raise ServingError('"input_data" must be a list like [{"fields": [...], "values": [[...], ...]}]', 400)
        count = 0
        for e, entry in enumerate(entries):
            where = f'"input_data"[{e}]'
            if not isinstance(entry, dict) or "values" not in entry:
                raise ServingError(f'{where} must be an object with "values" (and "fields" naming them)', 400)
            positions = _check_fields(entry["fields"], schema, where) if "fields" in entry else None
            blocks.append(_rows_block(entry["values"], positions, schema, where, count))
            count += len(blocks[-1])
    elif isinstance(document, dict) and "instances" in document:
        items = document["instances"]
        if not isinstance(items, list):
            raise ServingError('"instances" must be a list of records', 400)
        if items and all(isinstance(item, dict) for item in items):
            blocks.append(_objects_block(items, schema, 0))
        else:
            blocks.append(_rows_block(items, None, schema, "instances", 0))
    elif isinstance(document, list):
        rows = document if not document or isinstance(document[0], list) else [document]
        blocks.append(_rows_block(rows, None, schema, "body", 0))
    elif isinstance(document, dict):
        keys = ", ".join(sorted(document)) or "none"
        raise ServingError(f'JSON body must have "input_data" or "instances" (got keys: {keys})', 400)
    else:
        raise ServingError("JSON body must be an object or an array of records", 400)
    records = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    if len(records) == 0:
        raise ServingError("input holds no records (N = 0)", 400)
    return records


def conform_records(array: np.ndarray, schema: InputSchema) -> np.ndarray:
    """Check numeric ``(N, F)`` records (or one ``(F,)``) against the schema: finite values,
    categorical columns holding a category index. Returns ``(N, F)`` float32.

    Raises:
        ServingError: 400 naming the expected shape, or the field with a bad value.
    """
    width = len(schema.fields)
    if array.ndim == 1 and array.shape[0] == width:
        array = array.reshape(1, width)
    if array.ndim != 2 or array.shape[1] != width:
        raise ServingError(
            f"input has shape {list(array.shape)}; expected N×{width} records of the fields "
            f"{', '.join(schema.field_names)}", 400)
    if array.shape[0] == 0:
        raise ServingError("input holds no records (N = 0)", 400)
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=0)
    if not finite.all():
        raise ServingError(f"field '{schema.fields[int(np.argmin(finite))].name}' holds NaN or infinite values", 400)
    for j, field in enumerate(schema.fields):
        if field.kind != "categorical":
            continue
        codes = array[:, j]
        bad = (codes < 0) | (codes >= len(field.categories)) | (codes != np.round(codes))
        if bad.any():
            raise ServingError(
                f"record {int(np.argmax(bad))}: field '{field.name}' is categorical and takes a category index "
                f"0..{len(field.categories) - 1} in numeric input (got {float(codes[bad][0]):g}); send its text "
                "in JSON instead", 400)
    return array


def records_document(records: np.ndarray, fields: Sequence[Any]) -> dict[str, Any]:
    """Raw ``(N, F)`` records (categorical columns holding the category index) as the OpenScale
    request a client sends: ``{"input_data": [{"fields": [...], "values": [...]}]}``, each
    categorical value as its category's text. ``fields`` are the data set's
    :class:`~modelcycle.core.dataset_types.Feature` objects or the schema's fields, in column order."""
    columns: list[list[Any]] = []
    for i, field in enumerate(fields):
        column = np.asarray(records)[:, i]
        if field.kind == "categorical":
            columns.append([field.categories[int(code)] for code in column])
        else:
            columns.append(column.astype(float).tolist())
    return {"input_data": [{"fields": [field.name for field in fields], "values": [list(row) for row in zip(*columns)]}]}
