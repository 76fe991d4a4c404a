"""SageMaker Data Capture: what a SageMaker endpoint answered, brought into the monitoring store.

``deploy`` turns Data Capture on (:func:`capture_config`, ``serving.data_capture``): SageMaker then
writes every sampled request and answer as JSON Lines under
``<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl``, one event a line::

    {"captureData": {"endpointInput":  {"observedContentType": "application/x-npy", "mode": "INPUT",
                                        "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": "{...}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceId": "<the caller's InferenceId>",
                       "inferenceTime": "2026-12-02T04:33:28.123Z"},
     "eventVersion": "0"}

:func:`ingest` (the platform's ``flush_payload``) lists the objects it has not ingested yet,
decodes each event's request with the model's own ``input_fn`` (the local endpoint's decoding, so
the stored inputs are the same bytes) and its answer (modelcycle's JSON ``predictions`` or NPY
probabilities) into :class:`~modelcycle.core.monitoring.records.PayloadRecord`s, and stores them.
A record's id is the event's ``inferenceId`` when the caller set one, else its ``eventId``; image
``i`` of an ``n``-image request is ``{id}-{i}`` as on the local endpoint. Storing is idempotent
(ids are the store's key) and the ingested objects are remembered in a small state file under
``.modelcycle/datacapture/<endpoint>.json``, which also keeps the labels :func:`send_feedback`
sent, by inference id, until their records arrive.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from modelcycle.core.monitoring.errors import MonitoringError

__all__ = [
    "STATE_DIR", "CaptureEvent", "capture_config", "describe", "sdk_capture_config", "remember", "parse_line", "ingest",
    "send_feedback", "delete_captured", "inference_id", "with_scoring_ids",
]

#: Under the use case's ``.modelcycle/``: one state file per captured endpoint.
STATE_DIR = "datacapture"
_FEEDBACK_BATCH = 100  # images per InvokeEndpoint call of send_feedback
JSON_TYPES = ["application/json"]
CSV_TYPES = ["text/csv"]


# -- the endpoint config's DataCaptureConfig ---------------------------------------------------
def capture_config(section: Any, settings: Any) -> dict[str, Any] | None:
    """The ``DataCaptureConfig`` of an endpoint config for ``section`` (``serving.data_capture``),
    ``None`` when capture is off; ``settings`` (:class:`~.session.AwsSettings`, bucket resolved)
    gives the default destination ``s3://<bucket>/<prefix>/datacapture``. The same request the
    SDK's ``DataCaptureConfig`` sends (input and output, JSON and CSV content types named)."""
    if not section.enabled:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": int(section.sampling_percentage),
        "DestinationS3Uri": (section.destination or settings.s3_uri("datacapture")).rstrip("/"),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": list(CSV_TYPES), "JsonContentTypes": list(JSON_TYPES)},
    }


def describe(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The endpoint record's ``data_capture`` for an endpoint config's ``DataCaptureConfig``:
    ``{"destination", "sampling_percentage"}``, ``None`` when it does not capture."""
    if not config or not config.get("EnableCapture", True):
        return None
    return {"destination": config["DestinationS3Uri"].rstrip("/"),
            "sampling_percentage": int(config.get("InitialSamplingPercentage", 0))}


def sdk_capture_config(config: dict[str, Any] | None, sagemaker_session: Any) -> Any:
    """The SDK's ``DataCaptureConfig`` for ``model.deploy(data_capture_config=...)`` (``None``: off)."""
    if config is None:
        return None
    from sagemaker.model_monitor import DataCaptureConfig

    return DataCaptureConfig(
        enable_capture=True, sampling_percentage=config["InitialSamplingPercentage"],
        destination_s3_uri=config["DestinationS3Uri"], capture_options=["REQUEST", "RESPONSE"],
        csv_content_types=list(CSV_TYPES), json_content_types=list(JSON_TYPES), sagemaker_session=sagemaker_session,
    )


def inference_id() -> str:
    """A fresh ``InferenceId`` (SageMaker allows 64 printable characters)."""
    return uuid.uuid4().hex


def with_scoring_ids(status: int, body: bytes, content_type: str, given: str) -> bytes:
    """A 200 JSON answer with ``scoring_id`` ``given`` (and ``scoring_ids``, ``{given}-{i}``, for
    several records) unless it names its own; any other answer unchanged."""
    from modelcycle.core.monitoring.records import record_ids
    from modelcycle.core.serving.codecs import media_type

    if status != 200 or media_type(content_type) != "application/json":
        return body
    try:
        document = json.loads(body)
        records = len(document["predictions"][0]["values"])
    except (ValueError, KeyError, IndexError, TypeError):
        return body
    if not isinstance(document, dict) or "scoring_id" in document:
        return body
    ids = {"scoring_id": given, **({"scoring_ids": record_ids(given, records)} if records > 1 else {})}
    stripped = body.rstrip()  # the answer's own bytes, the ids appended
    return stripped[:-1] + b"," + json.dumps(ids, separators=(",", ":")).encode()[1:]


# -- the state file ----------------------------------------------------------------------------
def _state_path(work_dir: Path, endpoint: str) -> Path:
    return Path(work_dir) / STATE_DIR / f"{endpoint}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (two commands ingesting at once take turns)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise MonitoringError(f"{path} is not valid JSON ({exc}); delete it to ingest the captured objects "
                              "again (stored records are not duplicated)") from None
    return state if isinstance(state, dict) else {}


def _write(path: Path, state: dict[str, Any]) -> None:
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(scratch, path)


def remember(work_dir: Path, record: dict[str, Any], model_dir: Path, asset_revision: str | None,
             variant_revisions: dict[str, str] | None = None) -> Path | None:
    """Note where the deployed endpoint ``record`` captures (its ``data_capture``), which model
    decodes its traffic and which run each variant serves (``variant_revisions``: those serving
    another run than ``asset_revision``), keeping what was ingested before; returns the state
    file (``None`` without capture)."""
    capture = record.get("data_capture")
    if not capture:
        return None
    path = _state_path(work_dir, record["name"])
    with _locked(path):
        state = _read(path)
        state.update(endpoint=record["name"], region=record["region"], destination=capture["destination"],
                     model_dir=str(Path(model_dir).resolve()), asset_revision=asset_revision,
                     variant_revisions=dict(variant_revisions or {}))
        state.setdefault("ingested", {})
        state.setdefault("labels", {})
        _write(path, state)
    return path


# -- one captured event ------------------------------------------------------------------------
class CaptureEvent(NamedTuple):
    """One line of a capture object: the request and answer bodies with their content types."""

    event_id: str
    inference_id: str | None
    timestamp: float
    request: bytes
    request_type: str
    answer: bytes
    answer_type: str

    @property
    def scoring_id(self) -> str:
        """The records' id: the caller's inference id, else SageMaker's event id."""
        return self.inference_id or self.event_id


def _body(part: Any, name: str) -> tuple[bytes, str]:
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise ValueError(f"captureData.{name} has no data (was it captured? CaptureOptions need Input and Output)")
    encoding = str(part.get("encoding", "")).upper()
    if encoding == "BASE64":
        try:
            return base64.b64decode(part["data"], validate=True), str(part.get("observedContentType") or "")
        except (binascii.Error, ValueError):
            raise ValueError(f"captureData.{name}.data is not base64") from None
    if encoding in ("JSON", "CSV"):
        return part["data"].encode("utf-8"), str(part.get("observedContentType") or "")
    raise ValueError(f"captureData.{name}.encoding is {part.get('encoding')!r}, not JSON, CSV or BASE64")


def parse_line(line: bytes | str) -> CaptureEvent:
    """One capture line → :class:`CaptureEvent`.

    Raises:
        ValueError: not SageMaker's capture format (says which field is wrong).
    """
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    data, meta = event.get("captureData"), event.get("eventMetadata")
    if not isinstance(data, dict) or not isinstance(meta, dict):
        raise ValueError("captureData and eventMetadata are required")
    event_id = meta.get("eventId")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("eventMetadata.eventId is missing")
    given = meta.get("inferenceId")
    if given is not None and (not isinstance(given, str) or not given):
        raise ValueError("eventMetadata.inferenceId is not a string")
    try:
        when = datetime.fromisoformat(str(meta.get("inferenceTime")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"eventMetadata.inferenceTime {meta.get('inferenceTime')!r} is not an ISO 8601 time") from None
    request, request_type = _body(data.get("endpointInput"), "endpointInput")
    answer, answer_type = _body(data.get("endpointOutput"), "endpointOutput")
    return CaptureEvent(event_id, given, when, request, request_type, answer, answer_type)


# -- decoding events into payload records ------------------------------------------------------
class _Decoder:
    """Decodes captured requests with the served model's ``input_fn`` (the local endpoint's
    decoding; the weights are not loaded) and answers into probabilities."""

    def __init__(self, model_dir: Path) -> None:
        from modelcycle.core.artifacts import read_manifest
        from modelcycle.core.providers import load_artifact_framework
        from modelcycle.core.registry import PluginRegistry
        from modelcycle.core.serving.context import ServingContext

        self.manifest = read_manifest(model_dir)
        self.context = ServingContext(manifest=self.manifest, model_dir=Path(model_dir))
        self.classes = len(self.manifest.classes)
        self.tabular = bool(self.context.tabular)
        self.script = self.manifest.script is not None
        if not self.script:
            self.registry = PluginRegistry()
            load_artifact_framework(self.registry, self.manifest)

    def inputs(self, event: CaptureEvent) -> np.ndarray:
        """The raw inputs as the local endpoint journals them: uint8 ``(N, C, H, W)`` pixels, or
        float32 ``(N, F)`` tabular records."""
        if self.script:
            from modelcycle.core.serving.codecs import decode_request

            data = decode_request(event.request, event.request_type, self.context.schema)
        else:
            data = self.registry.hook.input_fn(body=event.request, content_type=event.request_type, context=self.context)
        data = np.asarray(data)
        if self.tabular:
            return np.ascontiguousarray(data.reshape(len(data), -1), dtype="<f4")
        pixels = data if data.dtype == np.uint8 else np.rint(data).astype(np.uint8)
        return pixels if pixels.ndim == 4 else pixels.reshape(len(pixels), 1, 1, -1)

    def probabilities(self, event: CaptureEvent, records: int) -> np.ndarray:
        """The answer's ``(records, K)`` probabilities (modelcycle's JSON ``predictions`` or NPY)."""
        from modelcycle.core.serving.codecs import media_type

        kind = media_type(event.answer_type)
        if self.script:
            from modelcycle.core.serving.script_client import read_answer

            return np.asarray(read_answer(event.answer, kind, records, self.classes).probabilities, dtype="<f4")
        if kind == "application/x-npy":
            probabilities = np.load(io.BytesIO(event.answer), allow_pickle=False)
        else:
            document = json.loads(event.answer)
            try:
                block = document["predictions"][0]
                column = block["fields"].index("probability")
                probabilities = np.asarray([row[column] for row in block["values"]], dtype=np.float64)
            except (KeyError, IndexError, TypeError, ValueError):
                raise ValueError(f"endpointOutput is not modelcycle's answer (no predictions with a probability "
                                 f"field): {event.answer[:200]!r}") from None
        probabilities = np.asarray(probabilities, dtype="<f4")
        if probabilities.shape != (records, self.classes):
            raise ValueError(f"endpointOutput has probabilities of shape {list(probabilities.shape)} for {records} "
                             f"input record(s) of a {self.classes}-class model")
        return probabilities

    def records(self, event: CaptureEvent, deployment_id: str, asset_revision: str | None) -> list[Any]:
        from modelcycle.core.monitoring.records import build_records, record_ids

        inputs = self.inputs(event)
        probabilities = self.probabilities(event, len(inputs))
        n = len(inputs)
        ids = record_ids(event.scoring_id, n)
        return build_records(ids, [event.scoring_id] * n, [event.timestamp] * n, [None] * n, deployment_id,
                             asset_revision, inputs.tobytes(), probabilities.tobytes(),
                             int(np.prod(inputs.shape[1:])), self.classes, self.tabular)


# -- ingesting ---------------------------------------------------------------------------------
def _s3(region: str) -> Any:
    from modelcycle.platforms.sagemaker.session import boto_session

    return boto_session(region).client("s3")


def _objects(s3: Any, destination: str, endpoint: str) -> list[str]:
    """Keys of the endpoint's capture objects (every variant), oldest hour first."""
    from modelcycle.platforms.sagemaker.session import s3_split

    bucket, prefix = s3_split(f"{destination.rstrip('/')}/{endpoint}/")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".jsonl")]
    return sorted(keys, key=lambda key: (key.split("/")[-5:-1], key))  # yyyy/mm/dd/hh across variants


def _ingest_object(s3: Any, bucket: str, key: str, decoder: _Decoder, state: dict[str, Any], store: Any) -> int:
    """Store one capture object's records (all or none) and attach the labels waiting for them;
    returns the records that were new."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    rows: list[Any] = []
    waiting: dict[str, int] = {}
    labels = state["labels"]
    variant = key.split("/")[-6] if key.count("/") >= 5 else ""  # <endpoint>/<variant>/yyyy/mm/dd/hh/<file>
    revision = (state.get("variant_revisions") or {}).get(variant, state.get("asset_revision"))
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = parse_line(line)
            records = decoder.records(event, state["endpoint"], revision)
        except Exception as exc:  # ValueError, the codecs' ServingError...: the line is not usable
            raise MonitoringError(
                f"capture object s3://{bucket}/{key}:{number}: {exc}. Nothing of this object was stored (earlier "
                "objects were); fix or delete the object, then run the command again") from None
        rows += records
        for record, label in zip(records, labels.get(event.inference_id or "", [])):
            waiting[record.scoring_id] = int(label)
    ids = [row.scoring_id for row in rows]
    new = len(ids) - len(store.existing_scoring_ids(ids))
    store.ingest(rows)
    if waiting:
        store.add_feedback(waiting, state["endpoint"])
        for event_id in {row.request_id for row in rows if row.scoring_id in waiting}:
            labels.pop(event_id, None)
    return new


def _ingest_endpoint(path: Path, store: Any) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from modelcycle.platforms.sagemaker.session import aws_error, s3_split

    with _locked(path):
        state = _read(path)
        if not state.get("destination"):
            return 0
        state.setdefault("ingested", {})
        state.setdefault("labels", {})
        s3 = _s3(state["region"])
        bucket, _ = s3_split(state["destination"])
        moved = 0
        decoder: _Decoder | None = None
        try:
            for key in _objects(s3, state["destination"], state["endpoint"]):
                if key in state["ingested"]:
                    continue
                decoder = decoder or _Decoder(Path(state["model_dir"]))
                moved += _ingest_object(s3, bucket, key, decoder, state, store)
                state["ingested"][key] = True
                _write(path, state)  # after the store committed: a crash in between re-reads, storing nothing twice
        except (BotoCoreError, ClientError) as exc:
            raise MonitoringError(str(aws_error(f"reading the captured payload of endpoint {state['endpoint']}", exc))) from None
        return moved


def ingest(endpoint: dict[str, Any] | None, store: Any, work_dir: Path) -> int:
    """``flush_payload`` of SageMaker endpoints: store the capture objects not ingested yet, of
    ``endpoint`` and of every endpoint of this use case that captured before (its state file
    under ``work_dir``); returns the new records.

    SageMaker writes capture objects within minutes of the requests, so what an endpoint
    answered last may arrive at a later call.

    Raises:
        MonitoringError: a capture line is not SageMaker's format or not this model's traffic
            (names ``s3://bucket/key:line``; what earlier objects held stays stored), or S3 cannot
            be read.
    """
    directory = Path(work_dir) / STATE_DIR
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    if endpoint is not None and endpoint.get("data_capture"):
        own = _state_path(work_dir, endpoint["name"])
        paths = [own] + [p for p in paths if p != own]
    return sum(_ingest_endpoint(path, store) for path in paths if path.is_file())


# -- feedback and cleanup ----------------------------------------------------------------------
def _npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(images), allow_pickle=False)
    return buffer.getvalue()


def send_feedback(endpoint: dict[str, Any], rows: list[Any], invoke: Any) -> int:
    """Score the labelled ``rows`` (``[[raw_input, label], ...]``) on ``endpoint`` in requests of
    100, each with a fresh ``InferenceId`` (``invoke(body, content_type, inference_id)`` →
    ``(status, body, content_type)``), and keep the labels by inference id: the records are
    labelled when their capture is ingested. Returns the rows sent.

    Raises:
        EndpointError: the endpoint does not capture its traffic.
        MonitoringError: the endpoint refused a request (the labels of earlier ones are kept).
    """
    from modelcycle.core.errors import EndpointError

    capture = endpoint.get("data_capture")
    if not capture or not capture.get("state"):
        raise EndpointError(f"SageMaker endpoint {endpoint.get('name')} does not capture its traffic, so labelled "
                            "records cannot reach the monitoring store: deploy it with serving.data_capture.enabled "
                            "true ('modelcycle deploy --force'), then run 'modelcycle log-feedback' again")
    path = Path(capture["state"])
    sent = 0
    for start in range(0, len(rows), _FEEDBACK_BATCH):
        chunk = rows[start:start + _FEEDBACK_BATCH]
        images = np.stack([np.asarray(image) for image, _ in chunk])
        given = inference_id()
        status, answer, _ = invoke(_npy(images), "application/x-npy", given)
        if status != 200:
            raise MonitoringError(f"log-feedback: SageMaker endpoint {endpoint['name']} answered {status}: "
                                  f"{answer[:300].decode(errors='replace')}")
        with _locked(path):
            state = _read(path)
            state.setdefault("labels", {})[given] = [int(label) for _, label in chunk]
            _write(path, state)
        sent += len(chunk)
    return sent


def delete_captured(endpoint: dict[str, Any] | None, work_dir: Path) -> int:
    """Delete the capture objects that were ingested (of every endpoint of this use case with a
    state file) and forget them; returns how many objects were deleted. Objects not ingested yet
    are left alone."""
    from botocore.exceptions import BotoCoreError, ClientError

    from modelcycle.platforms.sagemaker.session import aws_error, s3_split

    directory = Path(work_dir) / STATE_DIR
    deleted = 0
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        with _locked(path):
            state = _read(path)
            keys = sorted(state.get("ingested", {}))
            if keys:
                bucket, _ = s3_split(state["destination"])
                s3 = _s3(state["region"])
                try:
                    for start in range(0, len(keys), 1000):
                        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                                 "Quiet": True})
                except (BotoCoreError, ClientError) as exc:
                    raise MonitoringError(str(aws_error(f"deleting the captured payload of {state['endpoint']}", exc))) from None
                deleted += len(keys)
            path.unlink()
        Path(str(path) + ".lock").unlink(missing_ok=True)
    return deleted
