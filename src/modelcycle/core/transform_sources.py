"""What ``modelcycle transform`` reads: the records of a data set split, ``.npy`` files or
``.jsonl`` files, as the endpoint would decode them.

Every source becomes a :class:`Source`: a name (the split, or the file's path relative to the
input), its records already decoded and checked against the model's input schema (raw pixels
``(N, C, H, W)`` or tabular records ``(N, F)``, float32) and, for JSON Lines, the 1-based line
each record came from. Decoding is the endpoint's own: a ``.jsonl`` line is a request body in any
JSON form the endpoint accepts (``{"input_data": ...}``, ``{"instances": ...}``, a bare array, or
named tabular records) and goes through the serving pipeline's ``decode``; a ``.npy`` file is an
array of records or one record (:func:`~modelcycle.core.serving.codecs.conform_input`).

A script-mode model decodes with the user's own handlers, so for it a ``.jsonl`` line is kept as
its request body (:attr:`Source.bodies`) and decoded by the handlers at scoring time.

Errors: a missing path, an unsupported file type, an unreadable ``.npy`` and every malformed
line (``file:line: what is wrong``) are collected as :class:`InvalidRecord`; the caller decides
whether they are fatal (see :mod:`modelcycle.core.transform`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelcycle.core.errors import ModelcycleError, ServingError
from modelcycle.core.serving.codecs import JSON, conform_input

__all__ = ["Source", "InvalidRecord", "TransformError", "SUFFIXES", "split_source", "file_sources"]

#: The file types a folder (or a single file) may hold.
SUFFIXES = (".npy", ".jsonl")


class TransformError(ModelcycleError):
    """A batch transform cannot run: a bad input path, unsupported files, malformed records,
    an existing output, or no model to score with."""


@dataclass(frozen=True)
class InvalidRecord:
    """A record (or a whole file) that cannot be scored: ``where`` is ``file`` or ``file:line``."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class Source:
    """One input's records.

    Attributes:
        name: the split (``test``/``train``) or the file's path relative to the input.
        records: raw records ``(N, C, H, W)``/``(N, F)`` float32, or a callable
            ``(start, stop) -> records`` (a data set split is converted batch by batch).
        count: ``N``.
        lines: for a ``.jsonl`` file, the 1-based line of each record; else ``None``.
        bodies: for a script-mode model's ``.jsonl`` file, each line's request body (one request
            per line, decoded by the user's handlers); ``records`` is then empty.
    """

    name: str
    records: np.ndarray | Callable[[int, int], np.ndarray]
    count: int
    lines: list[int] | None = None
    bodies: list[bytes] = field(default_factory=list)

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Records ``start:stop`` as float32 raw inputs of the schema."""
        if callable(self.records):
            return self.records(start, stop)
        return self.records[start:stop]


def split_source(split_name: str, images: np.ndarray, schema: Any) -> Source:
    """The records of a data set split (``images`` as the dataset plugin gives them), converted
    per batch to the model's raw input."""

    def records(start: int, stop: int) -> np.ndarray:
        return conform_input(np.asarray(images[start:stop], dtype=np.float32), schema)

    return Source(split_name, records, len(images))


def _input_files(path: Path) -> tuple[list[Path], list[InvalidRecord]]:
    """The ``.npy``/``.jsonl`` files of ``path`` (a file, or a folder searched recursively, hidden
    entries skipped), sorted; an unsupported file is an :class:`InvalidRecord`."""
    if not path.exists():
        raise TransformError(f"input {path} does not exist: give a folder of .npy/.jsonl files, one such file, "
                             "or --split test|train")
    if path.is_file():
        candidates = [path]
    else:
        candidates = sorted(p for p in path.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
    files, invalid = [], []
    for candidate in candidates:
        if candidate.suffix.lower() in SUFFIXES:
            files.append(candidate)
        else:
            invalid.append(InvalidRecord(str(candidate), f"unsupported file type '{candidate.suffix or '(none)'}': "
                                         "transform reads .npy (an array of records, or one record) and .jsonl "
                                         "(one request document per line)"))
    if not files and not invalid:
        raise TransformError(f"input folder {path} holds no .npy or .jsonl files")
    return files, invalid


def _npy_source(path: Path, name: str, schema: Any) -> Source:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        raise ServingError(f"not a valid .npy array ({exc})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif":
        raise ServingError(f"the array must hold numbers (dtype {getattr(array, 'dtype', '?')} given)")
    records = conform_input(array.astype(np.float32, copy=False), schema)
    return Source(name, records, len(records))


def _jsonl_source(path: Path, name: str, decode: Callable[[bytes, str], np.ndarray] | None,
                  invalid: list[InvalidRecord]) -> Source | None:
    blocks: list[np.ndarray] = []
    lines: list[int] = []
    bodies: list[bytes] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            body = line.strip()
            if not body:
                continue
            if decode is None:  # a script-mode model: its handlers decode each line
                bodies.append(body)
                lines.append(number)
                continue
            try:
                block = decode(body, JSON)
            except ServingError as exc:
                invalid.append(InvalidRecord(f"{name}:{number}", str(exc)))
                continue
            if blocks and block.shape[1:] != blocks[0].shape[1:]:
                invalid.append(InvalidRecord(f"{name}:{number}", f"records of shape {list(block.shape[1:])} after "
                                             f"records of shape {list(blocks[0].shape[1:])}"))
                continue
            blocks.append(block)
            lines += [number] * len(block)
    if decode is None:
        return Source(name, np.empty((0,), np.float32), len(bodies), lines, bodies) if bodies else None
    if not blocks:
        return None
    records = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return Source(name, records, len(records), lines)


def file_sources(path: Path, schema: Any, decode: Callable[[bytes, str], np.ndarray] | None,
                 ) -> tuple[list[Source], list[InvalidRecord]]:
    """The sources of ``path`` (a folder or one file) and what could not be read.

    Args:
        schema: the model's input schema (``.npy`` records are checked against it).
        decode: the serving pipeline's ``decode(body, content_type)`` for ``.jsonl`` lines;
            ``None`` for a script-mode model (lines are kept as request bodies).

    Raises:
        TransformError: ``path`` does not exist, or is a folder with no input files.
    """
    files, invalid = _input_files(path)
    root = path if path.is_dir() else path.parent
    sources: list[Source] = []
    for file in files:
        name = str(file.relative_to(root))
        if file.suffix.lower() == ".npy":
            try:
                sources.append(_npy_source(file, name, schema))
            except ServingError as exc:
                invalid.append(InvalidRecord(name, str(exc)))
            continue
        source = _jsonl_source(file, name, decode, invalid)
        if source is not None:
            sources.append(source)
    return sources, invalid
