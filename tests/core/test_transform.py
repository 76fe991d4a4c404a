"""Batch transform (``UseCase.transform`` / ``modelcycle transform``): in-process scoring of a data
set split or a folder of ``.npy``/``.jsonl`` files into JSON Lines in the endpoint's output shape.

The use case serves the session's small trained model on a real local endpoint (deployed and
monitored once per module, stopped by pid afterwards, also on failure); the transform's
predictions are compared with what that endpoint answers for the same records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from conftest import deployed_and_monitored, isolated_module_env, mark_trained, write_use_case
from modelcycle.core.datasets import load_dataset
from modelcycle.core.errors import StageError
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.monitoring.service import flush_payload, store_for
from modelcycle.core.transform import TransformError


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _prediction(line: dict[str, Any]) -> tuple[int, list[float]]:
    block = line["predictions"][0]
    assert len(block["values"]) == 1, "one record per line"
    row = dict(zip(block["fields"], block["values"][0]))
    return int(row["prediction"]), [float(p) for p in row["probability"]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, trained_model_dir: Path) -> Iterator[Path]:
    """A use case over all 10,000 MNIST test images, deployed on a live local endpoint and monitored."""
    with isolated_module_env(tmp_path_factory, data_dir):
        directory = write_use_case(tmp_path_factory.mktemp("transform") / "uc", name="transform-mnist",
                                   data={"dataset": "mnist"})
        with deployed_and_monitored(directory, trained_model_dir):
            yield directory


@pytest.fixture(scope="module")
def test_images(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    test = load_dataset("mnist", data_dir / "mnist").test
    return test.images, test.labels


def test_the_test_split_scores_all_10000_images_as_the_endpoint_does(served: Path, tmp_path: Path,
                                                                      test_images: tuple[np.ndarray, np.ndarray]) -> None:
    use_case = UseCase(served)
    output = tmp_path / "scores.jsonl"
    seen: list[tuple[int, int]] = []
    result = use_case.transform(output, split="test", progress=lambda done, total: seen.append((done, total)))

    lines = _lines(output)
    assert result["records"] == len(lines) == 10_000
    assert [(line["source"], line["index"]) for line in lines] == [("test", i) for i in range(10_000)]
    assert seen[-1] == (10_000, 10_000) and len(seen) == 10  # 10 batches of 1024 (the last one 784)
    assert len({line["scoring_id"] for line in lines}) == 10_000
    predictions = np.array([_prediction(line)[0] for line in lines])
    images, labels = test_images
    assert (predictions == labels).mean() > 0.5  # a real classifier (one epoch on 2,000 images), not chance

    sample = np.random.default_rng(7).choice(10_000, 64, replace=False)
    answered = use_case.score(images=images[sample])  # the live endpoint, one request
    assert answered.predictions == predictions[sample].tolist()
    np.testing.assert_allclose(answered.probabilities, [_prediction(lines[i])[1] for i in sample], atol=1e-5)
    assert answered.response["predictions"][0]["fields"] == lines[0]["predictions"][0]["fields"]


@pytest.mark.parametrize("classes", [None, ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                               "eight", "nine"]])
def test_each_line_is_the_endpoint_answer_for_its_record_alone(trained_model_dir: Path,
                                                              test_images: tuple[np.ndarray, np.ndarray],
                                                              classes: list[str] | None) -> None:
    """The lines cut from a batch's encoded answer parse equal to the endpoint's encoding of each
    record on its own (same probabilities, same scoring id), plus where the record came from."""
    from modelcycle.core.serving.codecs import JSON, encode_response
    from modelcycle.core.serving.pipeline import load_pipeline
    from modelcycle.core.transform import _record_lines

    pipeline = load_pipeline(trained_model_dir)
    probabilities = pipeline.predict(pipeline.decode(orjson.dumps(test_images[0][:37].tolist()), JSON))
    tails = [{"scoring_id": f"batch-{i}", "source": "dir/ä \"q\".jsonl", "index": i,
              **({"line": i + 1} if i % 2 else {})} for i in range(37)]
    body, _ = encode_response(probabilities, JSON, classes=classes)
    lines = _record_lines(body, tails)

    assert lines is not None and len(lines) == 37 and all(line.endswith(b"}\n") for line in lines)
    for i, line in enumerate(lines):
        alone, _ = encode_response(probabilities[i:i + 1], JSON, f"batch-{i}", classes)
        where = {key: value for key, value in tails[i].items() if key != "scoring_id"}
        assert orjson.loads(line) == {**orjson.loads(alone), **where}
    assert list(orjson.loads(lines[1])) == ["predictions", "scoring_id", "source", "index", "line"]
    fields = orjson.loads(lines[0])["predictions"][0]["fields"]
    named = ["prediction", "prediction_label", "probability"]
    assert fields == (["prediction", "probability"] if classes is None else named)
    assert _record_lines(b'{"digits": [1, 2]}', tails[:2]) is None  # another shape: encoded record by record
    assert _record_lines(body, tails[:3]) is None  # not one row per record


def test_a_folder_of_npy_and_jsonl_files(served: Path, tmp_path: Path, test_images: tuple[np.ndarray, np.ndarray]) -> None:
    images = test_images[0]
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "a.npy", images[:5])  # N×28×28 uint8
    np.save(folder / "b.npy", images[5].astype(np.float32))  # one record
    with (folder / "sub" / "c.jsonl").open("w") as handle:
        handle.write(json.dumps({"input_data": [{"values": images[6:7].tolist()}]}) + "\n")
        handle.write("\n")  # blank lines are skipped
        handle.write(json.dumps({"instances": images[7:9].reshape(2, 784).tolist()}) + "\n")
        handle.write(json.dumps(images[9].tolist()) + "\n")
    output = tmp_path / "out.jsonl"
    result = UseCase(served).transform(output, input=folder, batch_size=4)

    lines = _lines(output)
    assert result["records"] == len(lines) == 10 and result["invalid"] == []
    assert result["sources"] == ["a.npy", "b.npy", "sub/c.jsonl"]
    assert [(line["source"], line["index"], line.get("line")) for line in lines] == [
        *[("a.npy", i, None) for i in range(5)], ("b.npy", 0, None),
        ("sub/c.jsonl", 0, 1), ("sub/c.jsonl", 1, 3), ("sub/c.jsonl", 2, 3), ("sub/c.jsonl", 3, 4)]
    answered = UseCase(served).score(images=images[:10])
    assert [_prediction(line)[0] for line in lines] == answered.predictions
    np.testing.assert_allclose([_prediction(line)[1] for line in lines], answered.probabilities, atol=1e-5)


def test_log_payload_stores_every_record_for_evaluate(served: Path, tmp_path: Path,
                                                      test_images: tuple[np.ndarray, np.ndarray]) -> None:
    use_case = UseCase(served)
    deployment = use_case.endpoint()["name"]  # type: ignore[index]
    store = store_for(use_case)
    flush_payload(use_case, store)  # what earlier tests scored on the endpoint is stored first
    before = store.payload_count(deployment)
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "batch.npy", test_images[0][:300])
    output = tmp_path / "logged.jsonl"
    result = use_case.transform(output, input=folder, batch_size=128, log_payload=True)

    ids = [line["scoring_id"] for line in _lines(output)]
    assert result["logged"] == 300 and result["deployment_id"] == deployment
    assert store.payload_count(deployment) == before + 300
    assert store.existing_scoring_ids(ids, deployment) == set(ids)
    stored = use_case.attach_feedback(dict(zip(ids, test_images[1][:300].tolist())))  # ids evaluate can label
    assert stored == 300
    quality = store.quality_data(deployment)
    assert len(quality["labels"]) >= 300


def test_malformed_lines_write_nothing_unless_skipped(served: Path, tmp_path: Path,
                                                     test_images: tuple[np.ndarray, np.ndarray]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = json.dumps({"instances": test_images[0][:2].tolist()})
    (folder / "mixed.jsonl").write_text("\n".join([good, "{not json", json.dumps([[1, 2, 3]]), good]) + "\n")
    output = tmp_path / "out.jsonl"
    use_case = UseCase(served)

    with pytest.raises(TransformError) as refused:
        use_case.transform(output, input=folder)
    message = str(refused.value)
    assert "2 invalid input(s), nothing written" in message and "--skip-invalid" in message
    assert "mixed.jsonl:2: malformed JSON body" in message
    assert "mixed.jsonl:3: input has shape [1, 3]" in message
    assert not output.exists() and list(tmp_path.glob(".out.jsonl*")) == []

    result = use_case.transform(output, input=folder, skip_invalid=True)
    assert result["records"] == 4 and len(result["invalid"]) == 2
    assert [line["line"] for line in _lines(output)] == [1, 1, 4, 4]


def test_bad_inputs_and_outputs_are_refused_with_the_fix(served: Path, tmp_path: Path) -> None:
    use_case = UseCase(served)
    output = tmp_path / "out.jsonl"
    with pytest.raises(TransformError, match="does not exist"):
        use_case.transform(output, input=tmp_path / "nowhere")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TransformError, match=r"table.csv: unsupported file type '\.csv'"):
        use_case.transform(output, input=tmp_path / "in")
    np.save(tmp_path / "in" / "text.npy", np.array(["a", "b"]))
    (tmp_path / "in" / "table.csv").unlink()
    with pytest.raises(TransformError, match="text.npy: the array must hold numbers"):
        use_case.transform(output, input=tmp_path / "in")
    with pytest.raises(TransformError, match=r"--input gs://bucket/prefix/: no installed platform reads gs:// URIs"):
        use_case.transform(output, input="gs://bucket/prefix/")
    with pytest.raises(TransformError, match="exactly one of --input"):
        use_case.transform(output)
    with pytest.raises(TransformError, match="inside the input folder"):
        use_case.transform(tmp_path / "in" / "out.jsonl", input=tmp_path / "in")
    output.write_text("keep me")
    with pytest.raises(TransformError, match="exists: pass --force"):
        use_case.transform(output, split="test")
    assert output.read_text() == "keep me"


def test_an_untrained_use_case_and_payload_without_an_endpoint(tmp_path: Path, data_dir: Path,
                                                               trained_model_dir: Path) -> None:
    directory = write_use_case(tmp_path / "uc", name="untrained", data={"dataset": "mnist"})
    records = tmp_path / "records.npy"
    np.save(records, np.zeros((20, 28, 28), np.uint8))
    with pytest.raises(StageError, match="no trained model to score with: run 'modelcycle train'"):
        UseCase(directory).transform(tmp_path / "out.jsonl", input=records)
    mark_trained(directory, trained_model_dir)
    with pytest.raises(StageError, match="nothing is deployed: run 'modelcycle deploy'"):
        UseCase(directory).transform(tmp_path / "out.jsonl", input=records, log_payload=True)
    result = UseCase(directory).transform(tmp_path / "out.jsonl", input=records)  # the latest trained model
    assert result["records"] == 20 and not (tmp_path / "uc" / ".modelcycle" / "endpoints").exists()


def test_threads_are_the_configured_ones_else_the_idle_cores(tmp_path: Path, data_dir: Path,
                                                             trained_model_dir: Path) -> None:
    import os

    records = tmp_path / "records.npy"
    np.save(records, np.zeros((3, 28, 28), np.uint8))
    chosen = write_use_case(tmp_path / "chosen", name="threads", data={"dataset": "mnist"},
                            serving={"threads": 3})
    mark_trained(chosen, trained_model_dir)
    assert UseCase(chosen).transform(tmp_path / "a.jsonl", input=records)["threads"] == 3
    idle = write_use_case(tmp_path / "idle", name="threads", data={"dataset": "mnist"})
    mark_trained(idle, trained_model_dir)
    assert 1 <= UseCase(idle).transform(tmp_path / "b.jsonl", input=records)["threads"] <= (os.cpu_count() or 1)


def test_the_command_line(served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelcycle.cli import main

    output = tmp_path / "cli.jsonl"
    assert main(["-C", str(served), "transform", "--split", "test", "--output", str(output), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["records"] == 10_000 and result["output"] == str(output)
    assert main(["-C", str(served), "transform", "--split", "test", "--output", str(output)]) == 2
    assert "exists: pass --force" in capsys.readouterr().err
    assert main(["-C", str(served), "transform", "--split", "test", "--output", str(output), "--force",
                 "--batch-size", "1000"]) == 0
    assert "scored 10000 records from 1 source(s)" in capsys.readouterr().out


SCRIPT_INFERENCE = '''\
import io
import json
import os

import numpy as np
import torch


def model_fn(model_dir):
    layer = torch.nn.Linear(784, 10)
    layer.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    return layer.eval()


def input_fn(body, content_type):
    if content_type == "application/json":
        data = np.asarray(json.loads(body), dtype=np.float32)
    else:
        data = np.load(io.BytesIO(body), allow_pickle=False).astype(np.float32)
    if data.size % 784:
        raise ValueError(f"send 28x28 images, got shape {list(data.shape)}")
    return torch.from_numpy(data.reshape(-1, 784) / 255.0)


def predict_fn(data, model):
    with torch.no_grad():
        return torch.log_softmax(model(data), dim=1)


def output_fn(prediction, accept):
    return json.dumps({"digits": prediction.argmax(dim=1).tolist()}), "application/json"
'''


def _script_model(directory: Path) -> Path:
    """A script-mode model directory (SageMaker's layout: model.pth, code/inference.py, manifest)."""
    import torch

    from modelcycle.core.artifacts import (
        DatasetLineage, InputSchema, Manifest, Preprocessing, ScriptMode, hash_files, modelcycle_version,
        write_manifest,
    )

    model_dir = directory / "model"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(SCRIPT_INFERENCE)
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(784, 10).state_dict(), model_dir / "model.pth")
    version = modelcycle_version()
    write_manifest(model_dir, Manifest(
        use_case="script-transform", framework="pytorch", framework_version=version, modelcycle_version=version,
        run_id=uuid.uuid4().hex, created_at=Manifest.now(), model_files=["model.pth"],
        input_schema=InputSchema(shape=(1, 28, 28)), preprocessing=Preprocessing(scale=1.0, mean=(0.0,), std=(1.0,)),
        classes=[str(i) for i in range(10)],
        dataset=DatasetLineage(name="mnist", checksums={}, train_records=0, test_records=10000),
        script=ScriptMode(training_entry_point="train.py", serving_entry_point="inference.py"),
        files=hash_files(model_dir),
    ))
    return model_dir


def test_a_script_mode_model_answers_through_its_own_handlers(tmp_path: Path, data_dir: Path,
                                                              test_images: tuple[np.ndarray, np.ndarray]) -> None:
    import torch

    model_dir = _script_model(tmp_path / "script")
    directory = write_use_case(tmp_path / "uc", name="script-transform", data={"dataset": "mnist"})
    mark_trained(directory, model_dir)
    folder = tmp_path / "in"
    folder.mkdir()
    images = test_images[0]
    (folder / "lines.jsonl").write_text(json.dumps(images[:3].tolist()) + "\n" + json.dumps([1, 2]) + "\n")
    use_case = UseCase(directory)

    np.save(tmp_path / "images.npy", images[:30])
    result = use_case.transform(tmp_path / "split.jsonl", input=tmp_path / "images.npy")
    lines = _lines(tmp_path / "split.jsonl")
    assert result["script"] is True and result["records"] == len(lines) == 30
    layer = torch.nn.Linear(784, 10)
    layer.load_state_dict(torch.load(model_dir / "model.pth", weights_only=True))
    expected = layer(torch.from_numpy(images[:30].reshape(30, 784).astype(np.float32) / 255.0)).argmax(dim=1).tolist()
    assert [line["digits"] for line in lines] == [[digit] for digit in expected]  # the user's output_fn
    assert [line["index"] for line in lines] == list(range(30))

    with pytest.raises(TransformError, match=r"lines.jsonl:2: send 28x28 images, got shape \[2\]"):
        use_case.transform(tmp_path / "file.jsonl", input=folder)
    result = use_case.transform(tmp_path / "file.jsonl", input=folder, skip_invalid=True)
    assert _lines(tmp_path / "file.jsonl") == [
        {"digits": expected[:3], "source": "lines.jsonl", "index": 0, "line": 1,
         "scoring_id": _lines(tmp_path / "file.jsonl")[0]["scoring_id"]}]
    assert orjson.loads(orjson.dumps(result["invalid"])) == ["lines.jsonl:2: send 28x28 images, got shape [2]"]
