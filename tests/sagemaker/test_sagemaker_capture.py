"""Monitoring a SageMaker-hosted endpoint through Data Capture, against a moto server on 127.0.0.1.

``deploy`` must ask for capture in every endpoint config it creates (the SDK's and the blue/green
update's). For the traffic itself moto writes no capture, so the test writes what SageMaker would:
the same requests are scored on a local endpoint of the same model over real HTTP, and each
request and answer becomes a capture event in SageMaker's JSON Lines format under the endpoint's
capture prefix in moto's S3. What the SageMaker use case then ingests must equal what the local
endpoint logged: counts, ids, inputs, predictions, probabilities and the evaluations.

For ``log-payload`` / ``log-feedback`` on the SageMaker use case, :class:`FakeCapturingRuntime`
plays SageMaker's runtime: InvokeEndpoint is answered by that local endpoint (its ids stripped:
the handlers in SageMaker's container give none) and captured as SageMaker does, with the
caller's ``InferenceId``.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sagemaker")
pytest.importorskip("moto")

from conftest import SMALL, deployed_and_monitored, mark_trained, write_use_case  # noqa: E402
from test_sagemaker_platform import (  # noqa: E402,F401 - the fixtures are used by name
    BUCKET,
    REGION,
    ROLE,
    aws,
    moto_server,
    no_internet,
)
from test_sagemaker_updates import CANARY, FakeEndpointUpdates, updates  # noqa: E402,F401

CAPTURE_HEADER = {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}


def _s3() -> Any:
    import boto3

    return boto3.client("s3", region_name=REGION)


def _part(body: bytes, content_type: str, mode: str) -> dict[str, Any]:
    """One side of a capture event, encoded as SageMaker does (JSON/CSV as text, else base64)."""
    if content_type.startswith(("application/json", "text/csv")):
        encoding, data = ("CSV" if content_type.startswith("text/csv") else "JSON"), body.decode()
    else:
        encoding, data = "BASE64", base64.b64encode(body).decode()
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def capture_event(request: bytes, request_type: str, answer: bytes, answer_type: str, event_id: str,
                  at: float, inference_id: str | None = None) -> bytes:
    metadata = {"eventId": event_id, "inferenceTime": datetime.fromtimestamp(at, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")}
    if inference_id is not None:
        metadata["inferenceId"] = inference_id
    event = {"captureData": {"endpointInput": _part(request, request_type, "INPUT"),
                             "endpointOutput": _part(answer, answer_type, "OUTPUT")},
             "eventMetadata": metadata, "eventVersion": "0"}
    return json.dumps(event).encode()


def put_capture(destination: str, endpoint: str, lines: list[bytes], at: float, variant: str = "AllTraffic") -> str:
    """Write ``lines`` as one capture object where SageMaker puts it; returns its key."""
    bucket, prefix = destination[len("s3://"):].split("/", 1)
    hour = time.strftime("%Y/%m/%d/%H", time.gmtime(at))
    key = f"{prefix}/{endpoint}/{variant}/{hour}/{time.strftime('%M-%S', time.gmtime(at))}-{uuid.uuid4()}.jsonl"
    _s3().put_object(Bucket=bucket, Key=key, Body=b"\n".join(lines) + b"\n")
    return key


def _npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    return buffer.getvalue()


def _post(url: str, body: bytes, content_type: str) -> tuple[bytes, str]:
    request = urllib.request.Request(url + "/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.read(), answer.headers["Content-Type"]


class FakeCapturingRuntime:
    """WSGI middleware over moto: InvokeEndpoint answered by a real local endpoint of the same
    model and captured into the endpoint's capture prefix, with the caller's InferenceId."""

    def __init__(self, app: Any, local_url: str, destination: str) -> None:
        self.app, self.local_url, self.destination = app, local_url, destination
        self.inference_ids: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not (path.startswith("/endpoints/") and path.endswith("/invocations")):
            return self.app(environ, start_response)
        endpoint = path.split("/")[2]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        content_type = environ.get("CONTENT_TYPE", "")
        inference_id = environ.get("HTTP_X_AMZN_SAGEMAKER_INFERENCE_ID")
        answer, answer_type = _post(self.local_url, body, content_type)
        document = json.loads(answer)
        document.pop("scoring_id", None), document.pop("scoring_ids", None)  # SageMaker's container gives none
        answer = json.dumps(document).encode()
        self.inference_ids.append(inference_id or "")
        at = time.time()
        put_capture(self.destination, endpoint, [capture_event(body, content_type, answer, answer_type,
                                                               str(uuid.uuid4()), at, inference_id)], at)
        start_response("200 OK", [("Content-Type", answer_type), ("Content-Length", str(len(answer)))])
        return [answer]


@pytest.fixture
def sagemaker_capture_use_case(tmp_path: Path, trained_model_dir: Path) -> Path:
    directory = write_use_case(tmp_path / "sm", name="sm-capture", **SMALL,
                               serving={"platform": "sagemaker", "role": ROLE, "bucket": BUCKET})
    mark_trained(directory, trained_model_dir)
    return directory


def test_deploy_enables_data_capture_and_an_update_keeps_it(
    updates: FakeEndpointUpdates, sagemaker_capture_use_case: Path
) -> None:
    from modelcycle.core.lifecycle import UseCase

    destination = f"s3://{BUCKET}/modelcycle/trained-mnist/datacapture"  # the prefix of the model's use case, as its archive's
    expected = {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": destination,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": CAPTURE_HEADER}
    first = UseCase(sagemaker_capture_use_case).deploy()
    (created,) = updates.requests("CreateEndpointConfig")  # the SDK's model.deploy
    assert created["DataCaptureConfig"] == expected
    assert first["data_capture"]["destination"] == destination and first["payload_logging"] is True
    state = json.loads(Path(first["data_capture"]["state"]).read_text())
    assert (state["endpoint"], state["destination"], state["ingested"]) == (first["name"], destination, {})

    second = UseCase(sagemaker_capture_use_case, overrides={"serving.variants": CANARY}).deploy(force=True)
    assert "UpdateEndpoint" in updates.actions()
    assert [r["DataCaptureConfig"] for r in updates.requests("CreateEndpointConfig")] == [expected, expected]
    assert second["data_capture"]["destination"] == destination

    # the sampling and destination are the user's; a misspelt key is named
    third = UseCase(sagemaker_capture_use_case, overrides={
        "serving.data_capture.sampling_percentage": 20, "serving.data_capture.destination": f"s3://{BUCKET}/elsewhere/",
    }).deploy(force=True)
    latest = updates.requests("CreateEndpointConfig")[-1]["DataCaptureConfig"]
    assert (latest["InitialSamplingPercentage"], latest["DestinationS3Uri"]) == (20, f"s3://{BUCKET}/elsewhere")
    assert third["data_capture"] == {"destination": f"s3://{BUCKET}/elsewhere", "sampling_percentage": 20,
                                     "state": first["data_capture"]["state"]}
    from modelcycle.core.config import load_config
    from modelcycle.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"serving\.data_capture\.sampling: unknown key; allowed keys: destination, "
                                          r"enabled, sampling_percentage"):
        load_config(sagemaker_capture_use_case, {"serving.data_capture.sampling": 5})

    # capture turned off: the update's endpoint config captures nothing, and labelled rows cannot be sent
    off = UseCase(sagemaker_capture_use_case, overrides={"serving.data_capture.enabled": False}).deploy(force=True)
    assert "DataCaptureConfig" not in updates.requests("CreateEndpointConfig")[-1]
    assert (off["data_capture"], off["payload_logging"]) == (None, False)
    from modelcycle.core.errors import EndpointError
    from modelcycle.platforms.sagemaker import plugin

    with pytest.raises(EndpointError, match=r"does not capture its traffic.*serving\.data_capture\.enabled true"):
        plugin.send_feedback(off, [[np.zeros((28, 28), np.uint8), 1]], None)
    UseCase(sagemaker_capture_use_case).cleanup()


@pytest.mark.parametrize(("line", "problem"), [
    (b"{not json", r"not JSON"),
    (b'{"captureData": {}}', r"captureData and eventMetadata are required"),
    (b'{"captureData": {}, "eventMetadata": {"inferenceTime": "2026-12-02T05:00:00Z"}}', r"eventId is missing"),
    (b'{"captureData": {"endpointInput": {"data": "x", "encoding": "GZIP"}}, "eventMetadata": {"eventId": "e", '
     b'"inferenceTime": "2026-12-02T05:00:00Z"}}', r"endpointInput\.encoding is 'GZIP', not JSON, CSV or BASE64"),
    (b'{"captureData": {"endpointInput": {"data": "%%%", "encoding": "BASE64"}}, "eventMetadata": {"eventId": "e", '
     b'"inferenceTime": "2026-12-02T05:00:00Z"}}', r"endpointInput\.data is not base64"),
])
def test_a_line_that_is_not_sagemakers_capture_format_is_named(line: bytes, problem: str) -> None:
    from modelcycle.platforms.sagemaker.capture import parse_line

    with pytest.raises(ValueError, match=problem):
        parse_line(line)


def test_a_capture_line_parses_into_its_bodies_and_ids() -> None:
    from modelcycle.platforms.sagemaker.capture import parse_line

    npy = _npy(np.arange(4, dtype=np.uint8).reshape(1, 2, 2))
    event = parse_line(capture_event(npy, "application/x-npy", b'{"predictions": []}', "application/json", "e-1",
                                     1764650000.25, "given-7"))
    assert (event.event_id, event.inference_id, event.scoring_id, event.timestamp) == ("e-1", "given-7", "given-7",
                                                                                        1764650000.25)
    assert (event.request, event.request_type, event.answer) == (npy, "application/x-npy", b'{"predictions": []}')
    assert parse_line(capture_event(b"1,2", "text/csv", b"3", "text/csv", "e-2", 0.0)).scoring_id == "e-2"


def _comparable(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {r["scoring_id"]: (r["request_id"], r["scoring_input"], r["prediction"], r["probability"],
                              r["prediction_probability"], r["mean_intensity"], r["ink_fraction"]) for r in records}


def _measured(results: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {m["monitor"]: (m["metrics"], m["records"], m["violations"]) for m in results}


def test_captured_traffic_monitors_as_the_local_endpoint_does(
    aws: Any, tmp_path: Path, trained_model_dir: Path, sagemaker_capture_use_case: Path, mnist_test_images: Any
) -> None:
    import orjson

    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.monitoring import service
    from modelcycle.core.monitoring.errors import MonitoringError

    images, _ = mnist_test_images
    with deployed_and_monitored(write_use_case(tmp_path / "local", name="local-capture", **SMALL),
                                trained_model_dir) as local_dir:
        local = UseCase(local_dir)
        endpoint = local.endpoint()
        # the traffic: one NPY request of 40 images, a JSON request of 5 and one of a single image
        traffic = [(_npy(images[:40]), "application/x-npy"),
                   (orjson.dumps({"input_data": [{"values": images[40:45]}]}, option=orjson.OPT_SERIALIZE_NUMPY),
                    "application/json"),
                   (orjson.dumps({"instances": images[45:46]}, option=orjson.OPT_SERIALIZE_NUMPY), "application/json")]
        events = []
        for body, content_type in traffic:
            answer, answer_type = _post(endpoint["url"], body, content_type)
            events.append(capture_event(body, content_type, answer, answer_type, json.loads(answer)["scoring_id"],
                                        time.time()))
        local_feedback = local.log_feedback(samples=46)
        local_results = local.evaluate(plots=False)
        local_store = service.store_for(local)
        local_records = local_store.payload_records(endpoint["name"])
        assert len(local_records) == 46 and local_feedback["matched_payload"] == 46

        sagemaker = UseCase(sagemaker_capture_use_case)
        record = sagemaker.deploy()
        sagemaker.monitor()
        destination, name = record["data_capture"]["destination"], record["name"]
        keys = [put_capture(destination, name, events[:2], time.time()),
                put_capture(destination, name, events[2:], time.time(), variant="Canary")]
        put_capture(f"s3://{BUCKET}/modelcycle/other", name, events, time.time())  # not this endpoint's prefix

        # ingest: the same records as the local endpoint logged, labelled and evaluated alike
        feedback = sagemaker.log_feedback(samples=46)
        assert (feedback["matched_payload"], feedback["scored"]) == (46, 0)
        results = sagemaker.evaluate(plots=False)
        store = service.store_for(sagemaker)
        records = store.payload_records(name)
        assert len(records) == 46
        assert _comparable(records) == _comparable(local_records)
        assert {r["asset_revision"] for r in records} == {r["asset_revision"] for r in local_records}
        assert _measured(results) == _measured(local_results)
        assert {m["monitor"] for m in results} == {"quality", "drift"}

        # ingesting again stores nothing: objects are remembered, and the ids are the store's key
        assert service.flush_payload(sagemaker, store) == 0
        state_file = Path(record["data_capture"]["state"])
        assert sorted(json.loads(state_file.read_text())["ingested"]) == sorted(keys)
        state = json.loads(state_file.read_text())
        state["ingested"] = {}
        state_file.write_text(json.dumps(state))
        assert service.flush_payload(sagemaker, store) == 0
        assert store.payload_count(name) == 46

        # a malformed line is named by object and line; what was stored stays
        bad = put_capture(destination, name, [events[0], b'{"captureData": {}, "eventMetadata": {"eventId": "x", "inferenceTime": "2026-12-02T05:00:00Z"}}'],
                          time.time() + 3600)
        with pytest.raises(MonitoringError, match=rf"s3://{BUCKET}/{bad}:2: .*endpointInput has no data"):
            sagemaker.evaluate(plots=False)
        assert store.payload_count(name) == 46
        _s3().delete_object(Bucket=BUCKET, Key=bad)

        # log-payload: InvokeEndpoint with an InferenceId, captured by SageMaker, ingested under that id
        runtime = FakeCapturingRuntime(aws.app, endpoint["url"], destination)
        aws.app = runtime
        logged = sagemaker.log_payload(samples=12, offset=100)
        assert (logged["records"], logged["stored"]) == (12, 12)
        (given,) = runtime.inference_ids
        assert logged["scoring_ids"] == [f"{given}-{i}" for i in range(12)]
        assert store.payload_count(name) == 58

        # log-feedback beyond the logged records: labelled rows scored with InferenceIds, labels
        # attached when their capture is ingested
        before = store.feedback_count(name)
        feedback = sagemaker.log_feedback(samples=12 + 30)
        assert (feedback["matched_payload"], feedback["scored"]) == (12, 30)
        sent = runtime.inference_ids[1:]
        assert len(sent) == 1 and sent[0]
        service.flush_payload(sagemaker, store)
        assert store.feedback_count(name) == before + 42
        from modelcycle.core.datasets import load_dataset

        labels = load_dataset("mnist", settings=sagemaker.config.data).test.take(30).labels.tolist()
        assert json.loads(state_file.read_text())["labels"] == {}
        stored = {r["scoring_id"]: r for r in store.payload_records(name)}
        assert all(f"{sent[0]}-{i}" in stored for i in range(30))
        assert _labels(store, [f"{sent[0]}-{i}" for i in range(30)]) == labels

        # cleanup --records: the store's records and the ingested capture objects are deleted
        ingested = sorted(json.loads(state_file.read_text())["ingested"])
        assert len(ingested) == 4  # two written, one per log-payload and log-feedback request
        removed = sagemaker.cleanup(records=True)
        assert removed["captured_objects"] == 4 and removed["payload_records"] == 88
        left = _s3().list_objects_v2(Bucket=BUCKET, Prefix=destination[len(f"s3://{BUCKET}/"):]).get("Contents", [])
        assert left == [] and not state_file.exists()
        assert _s3().list_objects_v2(Bucket=BUCKET, Prefix="modelcycle/other/")["KeyCount"] == 1  # not ingested: kept


def _labels(store: Any, ids: list[str]) -> list[int]:
    import sqlalchemy as sa

    from modelcycle.core.monitoring.store import feedback

    with store.engine.connect() as conn:
        found = dict(conn.execute(sa.select(feedback.c.scoring_id, feedback.c.label)
                                  .where(feedback.c.scoring_id.in_(ids))).all())
    return [found[i] for i in ids]


def test_a_variants_records_name_the_run_it_serves(aws: Any, tmp_path: Path, trained_model_dir: Path,
                                                   mnist_test_images: Any) -> None:
    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.monitoring.store import MonitoringStore
    from modelcycle.platforms.sagemaker import capture

    work_dir = tmp_path / ".modelcycle"
    destination = f"s3://{BUCKET}/capture-only"
    record = {"name": "ep-1", "region": REGION, "data_capture": {"destination": destination, "sampling_percentage": 100}}
    run_id = read_manifest(trained_model_dir).run_id
    capture.remember(work_dir, record, trained_model_dir, run_id, {"canary": "0123abcd"})
    images, _ = mnist_test_images
    answer = json.dumps({"predictions": [{"fields": ["prediction", "probability"], "values": [[3, [0.1] * 10]]}]}).encode()
    for variant in ("AllTraffic", "canary"):
        put_capture(destination, "ep-1", [capture_event(_npy(images[:1]), "application/x-npy", answer,
                                                        "application/json", f"event-{variant}", time.time())],
                    time.time(), variant=variant)
    store = MonitoringStore(f"sqlite:///{tmp_path / 'store.db'}")
    assert capture.ingest(None, store, work_dir) == 2
    revisions = {r["scoring_id"]: r["asset_revision"] for r in store.payload_records("ep-1")}
    assert revisions == {"event-AllTraffic": run_id, "event-canary": "0123abcd"}
    (stored,) = [r for r in store.payload_records("ep-1") if r["scoring_id"] == "event-canary"]
    assert (stored["scoring_input"], stored["prediction"]) == (images[0].tobytes(), 0)  # argmax of a tie: the first
