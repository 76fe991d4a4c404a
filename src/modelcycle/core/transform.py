"""Batch transform: score a data set split or a folder of ``.npy``/``.jsonl`` files in-process
with the use case's model, one JSON line per record (``UseCase.transform``, ``modelcycle
transform``).

The model is the deployed run's (else the latest trained one's), loaded by the very pipeline the
endpoint serves it with (:func:`~modelcycle.core.serving.pipeline.load_pipeline`): records are
decoded by the same codecs, predicted in batches of ``batch_size`` (records of several small
files share a batch) and encoded by the same ``output_fn``, so each output line is what the
endpoint answers for that one record — ``{"predictions": [{"fields": [...], "values": [[...]]}],
"scoring_id": ...}`` — plus where the record came from: ``"source"`` (the split, or the file
relative to the input), ``"index"`` (the record's position in it) and, for JSON Lines, ``"line"``.

A script-mode model (``manifest.script``) is scored through the user's handlers one request at a
time: each record of a split or ``.npy`` file is sent as a one-record NPY body, each ``.jsonl``
line as its JSON body; the line written is the handlers' JSON object answer (another answer goes
under ``"response"``) plus the same source fields.

The forward passes use ``serving.threads`` intra-op threads when the configuration sets it, else
the machine's idle cores (see :func:`_threads`).

With ``log_payload`` the records are stored as payload of the deployed endpoint in the monitoring
store (the same :class:`~modelcycle.core.monitoring.records.PayloadRecord` an endpoint logs, ids
``{batch id}-{i}`` as the endpoint gives a request's records) and forwarded to the monitoring
backend, so ``evaluate`` and ``log-feedback`` see them; batch records carry no latency.

The input may also be a prefix URI (``s3://bucket/prefix/``: its objects are downloaded and
scored as a folder, source names being the keys relative to the prefix) and the output an object
URI (uploaded once written); with ``--platform sagemaker`` (or ``serving.platform: sagemaker``) the
records are scored as a SageMaker batch transform job instead, in the same output shape
(:mod:`~modelcycle.core.transform_remote`).

Nothing is written unless every input is valid: malformed lines, unreadable ``.npy`` files and
unsupported files are listed (``file:line: what is wrong``) in one :class:`TransformError`, or
with ``skip_invalid`` skipped and reported in the result. The output appears atomically, and an
existing one is replaced only with ``force``.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from modelcycle.core.errors import ServingError, StageError
from modelcycle.core.transform_sources import (
    InvalidRecord, Source, TransformError, file_sources, split_source,
)

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.view import UseCaseView

__all__ = ["transform", "TransformError", "DEFAULT_BATCH_SIZE", "model_dir_for"]

DEFAULT_BATCH_SIZE = 1024  # records per forward pass: per-batch overheads vanish, activations stay small (MNIST 23 MB)
_SHOWN_ERRORS = 20  # invalid records named in an error message
Progress = Callable[[int, int], None]


def model_dir_for(use_case: UseCaseView) -> Path:
    """The deployed run's model directory, else the latest trained one's.

    Raises:
        StageError: nothing is trained.
    """
    state = use_case.store.read()
    deploy, train = state.stages.get("deploy"), state.stages.get("train")
    candidates: list[Any] = []
    if deploy is not None and deploy.status == "done":
        run_id = deploy.outputs.get("run_id")
        candidates += [deploy.outputs.get("model_dir"), run_id and use_case.work_dir / "runs" / run_id / "model"]
    if train is not None and train.status == "done":
        candidates.append(train.outputs.get("model_dir"))
    for candidate in candidates:
        if candidate and (Path(candidate) / "modelcycle.json").is_file():
            return Path(candidate)
    raise StageError("transform", "no trained model to score with: run 'modelcycle train' first")


def _deployment_id(use_case: UseCaseView) -> str:
    state = use_case.store.read()
    name = state.stage("monitor").outputs.get("deployment_id") or state.stage("deploy").outputs.get("name")
    if not name:
        raise StageError("transform", "--log-payload stores the records as payload of the deployed endpoint, and "
                         "nothing is deployed: run 'modelcycle deploy' (and 'modelcycle monitor') first")
    return str(name)


def _threads(serving: Any) -> int:
    """Intra-op threads to score with: ``serving.threads`` when the configuration sets it, else
    the cores that are idle now (cores minus :func:`_busy_cores`, at least 1). A batch job
    should use the free cores, but more threads than free cores make a forward pass several
    times slower (the threads wait on each other: 5x measured with 2 threads on 2 busy cores),
    which is why the endpoint runs one."""
    if "threads" in serving.model_fields_set:
        return int(serving.threads)
    cores = os.cpu_count() or 1
    busy = _busy_cores()
    if busy is None:  # no way to tell on this platform
        return int(serving.threads)
    return max(1, min(cores, cores - int(busy + 0.5)))


def _busy_cores(samples: int = 5, interval: float = 0.001) -> float | None:
    """How many cores other work keeps busy now: the median over ``samples`` reads of the
    runnable tasks in ``/proc/loadavg`` (less this process's reading thread), else the 1-minute
    load average, else ``None``. The load average lags by a minute, so right after a burst of
    work (e.g. an endpoint that just answered a load test) it would keep an idle machine's
    cores unused."""
    counts: list[int] = []
    for attempt in range(samples):
        try:
            with open("/proc/loadavg", "rb") as handle:
                counts.append(int(handle.read().split()[3].split(b"/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            break
        if attempt + 1 < samples:
            time.sleep(interval)
    if counts:
        return float(sorted(counts)[len(counts) // 2])
    try:
        return os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return None


@contextmanager
def _serving_threads(threads: int) -> Iterator[None]:
    """Load the model with ``threads`` intra-op threads (``MODELCYCLE_SERVING_THREADS``, which
    the framework plugins apply when they load a model) unless the environment already sets it."""
    if os.environ.get("MODELCYCLE_SERVING_THREADS"):
        yield
        return
    os.environ["MODELCYCLE_SERVING_THREADS"] = str(threads)
    try:
        yield
    finally:
        os.environ.pop("MODELCYCLE_SERVING_THREADS", None)


def _check_paths(input_path: Path | None, output: Path, force: bool) -> None:
    if output.is_dir():
        raise TransformError(f"output {output} is a folder: give the file to write (e.g. {output / 'scores.jsonl'})")
    if output.exists() and not force:
        raise TransformError(f"output {output} exists: pass --force to overwrite it")
    if input_path is not None and input_path.is_dir() and output.resolve().is_relative_to(input_path.resolve()):
        raise TransformError(f"output {output} is inside the input folder {input_path}: write it elsewhere "
                             "(it would be read as input next time)")


def _sources(use_case: UseCaseView, pipeline: Any, input: str | os.PathLike[str] | None, split: str | None,
             script: bool) -> tuple[list[Source], list[InvalidRecord]]:
    if split is not None:
        from modelcycle.core.datasets import load_dataset

        dataset = load_dataset(use_case.config.data.dataset, settings=use_case.config.data)
        return [split_source(split, getattr(dataset, split).images, pipeline.context.schema)], []
    decode = None if script else pipeline.decode
    return file_sources(Path(input), pipeline.context.schema, decode)  # type: ignore[arg-type]


def _check_input(input: str | os.PathLike[str] | None, split: str | None) -> None:
    """Refuse a missing or doubled input, an unknown split and a missing local input before any
    model loads (a URI input is checked by the platform that reads it)."""
    if (input is None) == (split is None):
        raise TransformError("give exactly one of --input PATH (a folder of .npy/.jsonl files, or one file) "
                             "and --split test|train")
    if split is not None and split not in ("test", "train"):
        raise TransformError(f"--split must be 'test' or 'train', not {split!r}")
    text = os.fspath(input) if input is not None else ""
    if input is not None and "://" not in text and not Path(text).exists():
        raise TransformError(f"input {text} does not exist: give a folder of .npy/.jsonl files, one such file, "
                             "or --split test|train")


def _batches(sources: list[Source], batch_size: int) -> Iterator[list[tuple[Source, int, int]]]:
    """Pieces ``(source, start, stop)`` of at most ``batch_size`` records in all; records of
    several small sources share a batch."""
    batch: list[tuple[Source, int, int]] = []
    room = batch_size
    for source in sources:
        start = 0
        while start < source.count:
            stop = min(source.count, start + room)
            batch.append((source, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                yield batch
                batch, room = [], batch_size
    if batch:
        yield batch


def _with_fields(body: bytes, fields: dict[str, Any]) -> bytes:
    """``fields`` added to an encoded JSON object."""
    stripped = body.rstrip()
    extra = orjson.dumps(fields)[1:]  # '"source":...}'
    separator = b"," if stripped[:-1].rstrip() != b"{" else b""
    return stripped[:-1] + separator + extra


def _split_response(body: bytes, records: int) -> tuple[dict[str, Any], list[Any]] | None:
    """``(block without values, values)`` of a batch's JSON answer in the OpenScale shape
    (``{"predictions": [{"fields": [...], "values": [one row per record]}]}``), so each record's
    line is that answer for it alone; ``None`` for any other shape."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    blocks = document.get("predictions") if isinstance(document, dict) else None
    if not isinstance(blocks, list) or len(blocks) != 1 or not isinstance(blocks[0], dict):
        return None
    values = blocks[0].get("values")
    if not isinstance(values, list) or len(values) != records:
        return None
    return {key: value for key, value in blocks[0].items() if key != "values"}, values


def _where(source: Source, index: int) -> dict[str, Any]:
    where: dict[str, Any] = {"source": source.name, "index": index}
    if source.lines is not None:
        where["line"] = source.lines[index]
    return where


def _record_lines(body: bytes, tails: list[dict[str, Any]]) -> list[bytes] | None:
    """Each record's output line, from a batch's JSON answer ``body`` in the OpenScale shape: the
    answer for that record alone (its ``values`` row) followed by the fields of its ``tails``
    entry (``scoring_id``, ``source``, ...), newline-terminated; ``None`` for any other shape.

    A line is pre-formatted from the batch's block (encoded once) and the record's row, so it
    parses equal to ``{"predictions": [{**block, "values": [row]}], **tail}`` without building
    that nested object per record."""
    split = _split_response(body, len(tails))
    if split is None:
        return None
    block, values = split
    head = orjson.dumps({"predictions": [{**block, "values": []}]})
    if not head.endswith(b"[]}]}"):  # pragma: no cover - orjson keeps key order and compact separators
        return None
    prefix = head[:-4]  # '{"predictions":[{...,"values":['
    dumps = orjson.dumps
    return [b"".join((prefix, dumps(value), b"]}],", dumps(tail)[1:], b"\n")) for value, tail in zip(values, tails)]


class _PayloadRows:
    """Builds the payload records of scored batches (see the module doc)."""

    def __init__(self, deployment_id: str, run_id: str | None) -> None:
        from modelcycle.core.monitoring.records import build_records

        self._build = build_records
        self.deployment_id, self.run_id = deployment_id, run_id
        self.rows: list[Any] = []

    def add(self, ids: list[str], request_id: str, inputs: np.ndarray, probabilities: np.ndarray,
            tabular: bool) -> None:
        n = len(inputs)
        if tabular:
            values = np.ascontiguousarray(inputs.reshape(n, -1), dtype="<f4")
        else:
            values = np.rint(inputs.reshape(n, -1)).astype(np.uint8)
        probabilities = np.ascontiguousarray(probabilities, dtype="<f4")
        self.rows += self._build(ids, [request_id] * n, [time.time()] * n, [None] * n, self.deployment_id,
                                 self.run_id, values.tobytes(), probabilities.tobytes(), values.shape[1],
                                 probabilities.shape[1], tabular)


def _score_builtin(pipeline: Any, sources: list[Source], batch_size: int, write: Callable[[bytes], Any],
                   payload: _PayloadRows | None, progress: Progress, total: int) -> int:
    from modelcycle.core.monitoring.records import record_ids
    from modelcycle.core.serving.codecs import JSON

    done = 0
    tabular = bool(pipeline.context.tabular)
    for pieces in _batches(sources, batch_size):
        parts = [source.slice(start, stop) for source, start, stop in pieces]
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        probabilities = pipeline.predict(data)
        batch_id = uuid.uuid4().hex
        ids = record_ids(batch_id, len(data))
        tails = [{"scoring_id": ids[row], **where} for row, where in enumerate(
            _where(source, index) for source, start, stop in pieces for index in range(start, stop))]
        lines = _record_lines(pipeline.encode(probabilities, JSON)[0], tails)
        if lines is None:  # a plugin's own output_fn: encoded record by record
            lines = []
            for row, tail in enumerate(tails):
                body, _ = pipeline.encode(probabilities[row:row + 1], JSON, ids[row])
                lines.append(_with_fields(body, {key: tail[key] for key in tail if key != "scoring_id"}) + b"\n")
        write(b"".join(lines))
        if payload is not None:
            payload.add(ids, batch_id, data, probabilities, tabular)
        done += len(data)
        progress(done, total)
    return done


def _script_line(body: bytes, content_type: str, where: dict[str, Any]) -> bytes:
    if "json" in content_type:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        else:
            if isinstance(document, dict):
                return orjson.dumps({**document, **where}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
            return orjson.dumps({"response": document, **where}) + b"\n"
    text = body.decode("utf-8", "replace")
    return orjson.dumps({"response": text, "content_type": content_type, **where}) + b"\n"


def _score_script(pipeline: Any, sources: list[Source], write: Callable[[bytes], Any],
                  payload: _PayloadRows | None, progress: Progress, total: int,
                  invalid: list[InvalidRecord]) -> int:
    from modelcycle.core.monitoring.records import record_ids
    from modelcycle.core.serving.codecs import JSON, NPY

    done = 0
    for source in sources:
        for index in range(source.count):
            where = _where(source, index)
            if source.bodies:
                body, content_type = source.bodies[index], JSON
            else:
                buffer = io.BytesIO()
                np.save(buffer, source.slice(index, index + 1), allow_pickle=False)
                body, content_type = buffer.getvalue(), NPY
            try:
                scored = pipeline.score(body, content_type, JSON)
            except ServingError as exc:
                label = f"{source.name}:{where['line']}" if "line" in where else f"{source.name}[{index}]"
                invalid.append(InvalidRecord(label, str(exc)))
                continue
            scoring_id = uuid.uuid4().hex
            write(_script_line(scored.body, scored.content_type, {**where, "scoring_id": scoring_id}))
            if payload is not None and scored.inputs is not None:
                payload.add(record_ids(scoring_id, scored.records), scoring_id, scored.inputs, scored.probabilities,
                            scored.tabular)
            done += 1
            progress(done, total)
    return done


def _refuse(invalid: list[InvalidRecord]) -> TransformError:
    shown = "\n  ".join(map(str, invalid[:_SHOWN_ERRORS]))
    more = f"\n  ... and {len(invalid) - _SHOWN_ERRORS} more" if len(invalid) > _SHOWN_ERRORS else ""
    return TransformError(f"{len(invalid)} invalid input(s), nothing written (pass --skip-invalid to score the "
                          f"valid records and skip these):\n  {shown}{more}")


def transform(
    use_case: UseCaseView, output: str | os.PathLike[str], input: str | os.PathLike[str] | None = None,
    split: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, log_payload: bool = False, force: bool = False,
    skip_invalid: bool = False, progress: Progress | None = None, platform: str | None = None,
) -> dict[str, Any]:
    """Score ``input`` (a folder of ``.npy``/``.jsonl`` files, one such file, or a prefix URI such
    as ``s3://bucket/prefix/``) or the data set's ``split`` into ``output`` (a file, or an object
    URI), one JSON line per record (see the module doc). ``platform`` (else ``serving.platform``)
    names where to score: ``local`` in-process, a platform with batch jobs (``sagemaker``) as its
    job (:mod:`~modelcycle.core.transform_remote`).

    Args:
        progress: called with ``(records done, records in all)`` after every batch.

    Returns:
        ``{"output", "records", "sources", "invalid": [...], "seconds", "records_per_second",
        "run_id", "model_dir", "script", "batch_size", "threads", "logged", "deployment_id"}``,
        plus ``"platform"`` and ``"job"`` (the platform's job record) for a batch job.

    Raises:
        TransformError: a bad input or output path, invalid records (without ``skip_invalid``),
            a URI no installed platform reads, ``log_payload`` with a batch job.
        StageError: nothing is trained; ``log_payload`` with nothing deployed; a failed job.
    """
    from modelcycle.core import transform_remote as remote

    if batch_size < 1:
        raise TransformError(f"--batch-size must be at least 1, got {batch_size}")
    _check_input(input, split)
    job = remote.job_platform(use_case, platform)
    if job is None and not remote.is_uri(input) and not remote.is_uri(output):
        return _transform_here(use_case, output, input, split, batch_size, log_payload, force, skip_invalid, progress)
    if job is not None and log_payload:
        raise TransformError(f"--log-payload stores records scored in this process; a {job} batch job's are not: "
                             "pass --platform local to score and log them here")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="modelcycle-transform-") as tmp:
        local_output = Path(tmp) / "output" / Path(os.fspath(output)).name if remote.is_uri(output) else Path(output)
        local_input = input
        if remote.is_uri(input):
            remote.fetch_input(use_case, os.fspath(input), Path(tmp) / "input", platform)  # type: ignore[arg-type]
            local_input = Path(tmp) / "input"
        if job is not None:
            _check_paths(Path(local_input) if local_input is not None else None, local_output, force)
            result = remote.run_job(use_case, job, model_dir_for(use_case), local_output,
                                    Path(local_input) if local_input is not None else None, split,
                                    os.fspath(input) if remote.is_uri(input) else None, skip_invalid, _refuse,
                                    progress or (lambda done, all_: None))
        else:
            result = _transform_here(use_case, local_output, local_input, split, batch_size, log_payload, force,
                                     skip_invalid, progress)
        if remote.is_uri(output):
            result["output"] = remote.store_output(use_case, local_output, os.fspath(output), platform)
    return result


def _transform_here(use_case: UseCaseView, output: str | os.PathLike[str], input: str | os.PathLike[str] | None,
                    split: str | None, batch_size: int, log_payload: bool, force: bool, skip_invalid: bool,
                    progress: Progress | None) -> dict[str, Any]:
    """:func:`transform` in this process, from local paths."""
    from modelcycle.core.serving.pipeline import load_pipeline

    output_path = Path(output)
    input_path = Path(input) if input is not None else None
    _check_paths(input_path, output_path, force)
    model_dir = model_dir_for(use_case)
    deployment_id = _deployment_id(use_case) if log_payload else None
    threads = _threads(use_case.config.serving)
    with _serving_threads(threads):
        pipeline = load_pipeline(model_dir)
    script = hasattr(pipeline, "score")
    sources, invalid = _sources(use_case, pipeline, input, split, script)
    if invalid and not skip_invalid:
        raise _refuse(invalid)
    total = sum(source.count for source in sources)
    payload = _PayloadRows(deployment_id, pipeline.manifest.run_id) if deployment_id else None
    report = progress or (lambda done, all_: None)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(f".{output_path.name}.partial-{os.getpid()}")
    started = time.perf_counter()
    try:
        with partial.open("wb") as handle:
            if script:
                records = _score_script(pipeline, sources, handle.write, payload, report, total, invalid)
            else:
                records = _score_builtin(pipeline, sources, batch_size, handle.write, payload, report, total)
        if invalid and not skip_invalid:
            raise _refuse(invalid)
        seconds = time.perf_counter() - started
        logged = _store_payload(use_case, payload) if payload is not None else 0
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    return {
        "output": str(output_path), "records": records, "sources": [s.name for s in sources],
        "invalid": [str(record) for record in invalid], "seconds": seconds,
        "records_per_second": records / seconds if seconds > 0 else 0.0, "run_id": pipeline.manifest.run_id,
        "model_dir": str(model_dir), "script": script, "batch_size": batch_size, "threads": threads, "logged": logged,
        "deployment_id": deployment_id,
    }


def _store_payload(use_case: UseCaseView, payload: _PayloadRows) -> int:
    """Store the payload records and forward them to the monitoring backend; returns how many."""
    from modelcycle.core.monitoring import service

    mirror = service.open_mirror(use_case)
    store = service.store_for(use_case)
    for start in range(0, len(payload.rows), 5000):
        store.ingest(payload.rows[start:start + 5000])
    service.forward(use_case, store, mirror)
    return len(payload.rows)
