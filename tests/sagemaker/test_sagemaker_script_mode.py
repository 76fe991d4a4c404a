"""Script mode on SageMaker against moto on 127.0.0.1: the user's own train.py and inference.py.

A seed-style use case directory (argparse hyperparameters, ``SM_*`` variables, a helper module,
``requirements.txt``, the four handlers) is written per test. The fake training service of
``test_sagemaker_platform`` runs the job for real from what CreateTrainingJob names in S3 and
answers DescribeTrainingJob's ``FinalMetricDataList`` from the request's MetricDefinitions, as
SageMaker does. The tests check the requests the SDK sends (entry point, source archive,
hyperparameters, metric definitions; CreateModel's program and submit directory) and the run's
model directory in SageMaker's layout.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("sagemaker")
pytest.importorskip("moto")

from test_sagemaker_platform import (  # noqa: E402,F401 - the fixtures are used by name
    BUCKET,
    REGION,
    ROLE,
    FakeTrainingService,
    aws,
    moto_server,
    no_internet,
)

MNIST_IO = '''"""Read MNIST's IDX files (the .gz files of the channel)."""
import gzip
import struct

import numpy as np


def read_idx(path):
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = struct.unpack(">I", data[:4])[0] & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
'''

#: A nearest-centroid "network": trains in a second on the full MNIST channel, prints the seeds' lines.
TRAIN = '''import argparse
import os

import numpy as np

from mnist_io import read_idx

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--learning-rate", type=float, default=0.01)
parser.add_argument("--optimizer", type=str, default="sgd")
parser.add_argument("--export", type=str, default="pth")
parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAINING"])
parser.add_argument("--test", type=str, default=os.environ["SM_CHANNEL_TESTING"])
args = parser.parse_args()
print("arguments:", vars(args), flush=True)


def load(channel, prefix):
    images = read_idx(os.path.join(channel, prefix + "-images-idx3-ubyte.gz")).reshape(-1, 784) / 255.0
    return images.astype(np.float32), read_idx(os.path.join(channel, prefix + "-labels-idx1-ubyte.gz"))


x, y = load(args.train, "train")
centroids = np.stack([x[y == k].mean(axis=0) for k in range(10)])
for epoch in range(1, args.epochs + 1):
    loss = float(((x - centroids[y]) ** 2).mean())
    print(f"Train Epoch: {epoch} [{len(x)}/{len(x)} (100%)]\\tLoss: {loss:.6f}", flush=True)
tx, ty = load(args.test, "t10k")
distances = (tx ** 2).sum(1, keepdims=True) - 2 * tx @ centroids.T + (centroids ** 2).sum(1)
correct = int((distances.argmin(1) == ty).sum())
print(f"Test set: Average loss: {float(distances.min(1).mean()):.4f}, "
      f"Accuracy: {correct}/{len(ty)} ({100.0 * correct / len(ty):.0f}%)", flush=True)
target = os.path.join(args.model_dir, "model.pth" if args.export == "pth" else "1/variables/centroids.npy")
os.makedirs(os.path.dirname(target), exist_ok=True)
with open(target, "wb") as handle:
    np.save(handle, centroids)
'''

INFERENCE = '''import json
import os

import numpy as np


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.pth"), "rb") as handle:
        return np.load(handle)


def input_fn(body, content_type):
    if content_type != "application/json":
        raise ValueError(f"unsupported content type {content_type}")
    return np.asarray(json.loads(body)["instances"], dtype=np.float32).reshape(-1, 784) / 255.0


def predict_fn(images, centroids):
    return ((images[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)


def output_fn(predictions, accept):
    return json.dumps({"predictions": predictions.tolist()}), "application/json"
'''

HYPERPARAMETERS = {"epochs": 2, "batch-size": 64, "learning-rate": 0.01, "optimizer": "sgd"}
METRICS = [
    {"Name": "train:loss", "Regex": r"Train Epoch: \d+ \[\d+/\d+ \(\d+%\)\]\s+Loss: ([0-9.]+)"},
    {"Name": "test:accuracy", "Regex": r"Test set: Average loss: [0-9.]+, Accuracy: \d+/\d+ \(([0-9.]+)%\)"},
]
IMAGES = {
    "pytorch": ("pytorch-training:2.6-cpu-py312", "pytorch-inference:2.6-cpu-py312"),
    "keras": ("tensorflow-training:2.19-cpu-py312", "tensorflow-inference:2.19-cpu"),
}


#: The handlers' file: mlmonitor's TensorFlow use case names it tf_cnn_inference.py.
HANDLERS = {"pytorch": "inference.py", "keras": "tf_cnn_inference.py"}


def seed_use_case(directory: Path, framework: str, **training: Any) -> Path:
    """A seed-style script-mode use case directory (``source_dir: .``)."""
    directory.mkdir(parents=True)
    for name, text in (("train.py", TRAIN), (HANDLERS[framework], INFERENCE), ("mnist_io.py", MNIST_IO),
                       ("requirements.txt", "numpy\n")):
        (directory / name).write_text(text)
    hyperparameters = dict(HYPERPARAMETERS, export="pth" if framework == "pytorch" else "savedmodel")
    config = {
        "name": f"script-{framework}",
        "framework": framework,
        "data": {"dataset": "mnist"},
        "training": {"platform": "sagemaker", "role": ROLE, "bucket": BUCKET, "instance_type": "ml.c5.xlarge",
                     "entry_point": "train.py", "source_dir": ".", "hyperparameters": hyperparameters,
                     "metric_definitions": METRICS, "logs": False, **training},
        "serving": {"platform": "sagemaker", "instance_type": "ml.m5.large", "entry_point": HANDLERS[framework]},
    }
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory


def _s3_tar(uri: str) -> tarfile.TarFile:
    import boto3

    bucket, key = uri[len("s3://"):].split("/", 1)
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read()
    return tarfile.open(fileobj=io.BytesIO(body))


@pytest.mark.parametrize("framework", ["pytorch", "keras"])
def test_the_users_script_trains_and_its_handlers_deploy(aws: FakeTrainingService, data_dir: Path, tmp_path: Path,
                                                        framework: str) -> None:
    import boto3

    from modelcycle.core.artifacts import read_manifest, verify_model
    from modelcycle.core.lifecycle import UseCase

    directory = seed_use_case(tmp_path / "uc", framework)
    (directory / "__pycache__").mkdir()
    (directory / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"\0")
    use_case = UseCase(directory)
    outputs = use_case.train()
    job = json.loads((Path(outputs["model_dir"]).parent / "sagemaker.json").read_text())["name"]

    # CreateTrainingJob as SageMaker received it: the user's entry point, source archive,
    # hyperparameters (JSON-encoded by the SDK, names as the script expects them) and metrics
    request = aws.requests[job]
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["TrainingImage"].endswith(IMAGES[framework][0])
    assert algorithm["MetricDefinitions"] == METRICS
    hps = request["HyperParameters"]
    prefix = f"s3://{BUCKET}/modelcycle/script-{framework}"
    source_archive = f"{prefix}/code/{job}/source/sourcedir.tar.gz"
    assert hps.pop("sagemaker_program") == '"train.py"'
    assert json.loads(hps.pop("sagemaker_submit_directory")) == source_archive
    hps.pop("sagemaker_region")
    hps.pop("sagemaker_container_log_level")
    hps.pop("sagemaker_job_name")
    export = '"pth"' if framework == "pytorch" else '"savedmodel"'
    assert hps == {"epochs": "2", "batch-size": "64", "learning-rate": "0.01", "optimizer": '"sgd"', "export": export}
    with _s3_tar(source_archive) as tar:
        shipped = {name: tar.extractfile(name).read().decode() for name in tar.getnames()  # type: ignore[union-attr]
                   if tar.getmember(name).isfile()}
    assert shipped == {"train.py": TRAIN, HANDLERS[framework]: INFERENCE, "mnist_io.py": MNIST_IO, "requirements.txt": "numpy\n"}

    # the channels carry MNIST's original IDX files at the top level; the script read them all
    s3 = boto3.client("s3", region_name=REGION)
    keys = {o["Key"].rsplit("/", 2)[-2] + "/" + o["Key"].rsplit("/", 1)[-1]
            for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"modelcycle/script-{framework}/data/")["Contents"]}
    assert keys == {"training/train-images-idx3-ubyte.gz", "training/train-labels-idx1-ubyte.gz",
                    "testing/t10k-images-idx3-ubyte.gz", "testing/t10k-labels-idx1-ubyte.gz"}
    log = (aws.jobs[job]["outcome"].job_dir / "logs" / "algo-1.log").read_text()
    assert "'batch_size': 64" in log and "'optimizer': 'sgd'" in log

    # the run's model directory: SageMaker's layout plus modelcycle.json; metrics from FinalMetricDataList
    model_dir = Path(outputs["model_dir"])
    accuracy = float(re.findall(r"Accuracy: \d+/10000 \(([0-9.]+)%\)", log)[-1])
    assert 75 <= accuracy <= 90  # nearest centroid on MNIST: about 82 %
    assert outputs["metrics"]["test:accuracy"] == accuracy
    manifest = verify_model(model_dir)
    assert manifest.metrics == outputs["metrics"] and set(manifest.metrics) == {"train:loss", "test:accuracy"}
    assert manifest.script is not None and manifest.script.training_entry_point == "train.py"
    assert manifest.script.serving_entry_point == HANDLERS[framework]
    assert manifest.script.hyperparameters == json.loads(json.dumps(dict(HYPERPARAMETERS, export=json.loads(export))))
    assert manifest.framework == framework and manifest.dataset.train_records == 60000
    assert manifest.libraries == ({"pytorch": "2.6"} if framework == "pytorch" else {"tensorflow": "2.19"}) | {"python": "py312"}
    assert manifest.input_schema.shape == (1, 28, 28) and manifest.preprocessing.scale == 1.0
    weights = "model.pth" if framework == "pytorch" else "1/variables/centroids.npy"
    assert manifest.model_files == [weights]
    assert (model_dir / weights).is_file()
    code = sorted(p.relative_to(model_dir / "code").as_posix() for p in (model_dir / "code").rglob("*"))
    assert code == sorted([HANDLERS[framework], "mnist_io.py", "requirements.txt", "train.py"])  # no .modelcycle, config or cache
    assert read_manifest(model_dir).run_id == outputs["run_id"]

    # deploy: CreateModel runs the user's inference.py from the model's code/
    endpoint = use_case.deploy()
    assert endpoint["status"] == "InService"
    client = boto3.client("sagemaker", region_name=REGION)
    container = client.describe_model(ModelName=endpoint["model_name"])["PrimaryContainer"]
    assert container["Image"].endswith(IMAGES[framework][1])
    if framework == "pytorch":  # TensorFlow Serving runs code/inference.py without being told
        assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
        assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    with _s3_tar(container["ModelDataUrl"]) as tar:
        names = set(tar.getnames())
        # the handlers as code/inference.py: the only file TensorFlow Serving's container runs
        assert tar.extractfile("code/inference.py").read().decode() == INFERENCE  # type: ignore[union-attr]
    assert {weights, "code/mnist_io.py", "code/requirements.txt"} <= names
    assert use_case.cleanup()["serving"] == 3
    assert client.list_models()["Models"] == []


def test_a_missing_script_names_the_file_and_the_directory_before_any_aws_call(no_internet: list[Any],
                                                                               tmp_path: Path) -> None:
    from modelcycle.core.errors import ConfigError
    from modelcycle.core.lifecycle import UseCase

    directory = seed_use_case(tmp_path / "uc", "pytorch")
    (directory / "inference.py").unlink()
    with pytest.raises(ConfigError, match=r"serving\.entry_point 'inference\.py' not found in .*uc \(training\.source_dir\)"):
        UseCase(directory).train()
    assert no_internet == []


def test_a_script_that_saves_nothing_is_an_error_naming_sm_model_dir(aws: FakeTrainingService, data_dir: Path,
                                                                     tmp_path: Path) -> None:
    from modelcycle.core.errors import StageError
    from modelcycle.core.lifecycle import UseCase

    directory = seed_use_case(tmp_path / "uc", "pytorch")
    (directory / "train.py").write_text('print("Test set: Average loss: 0.1, Accuracy: 1/10 (10%)")\n')
    use_case = UseCase(directory)
    with pytest.raises(StageError, match=r"train\.py wrote nothing to SM_MODEL_DIR"):
        use_case.train()
    assert use_case.state().stage("train").status == "failed"


def test_an_imported_mlmonitor_signature_trains_and_deploys_without_edits(
    aws: FakeTrainingService, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from modelcycle.cli import main
    from modelcycle.core.lifecycle import UseCase

    directory = tmp_path / "use_case_mnist_pt"
    directory.mkdir()
    for name, text in (("pytorch_train.py", TRAIN), ("pytorch_inference.py", INFERENCE), ("mnist_io.py", MNIST_IO)):
        (directory / name).write_text(text)
    signature = {
        "signature": {"problem_type": "multiclass", "data_type": "unstructured_image"},
        "datasets": {"data_dir": "mnist"},
        "aws_runtime": {"train_script": "pytorch_train.py", "inference_script": "pytorch_inference.py",
                        "train_framework": "pytorch", "train_instance": "ml_c4_xlarge",
                        "inference_instance": "ml.c4.xlarge", "prefix": "DEMO-mnist-mlmonitor",
                        "job_name": "sm-mnist-pytorch"},
        "hyperparameters": {"batch-size": 128, "epochs": 1, "learning-rate": 0.001, "ibm-key-name": "IBM_KEYS"},
        "source_dir": "use_case_mnist_pt",
    }
    (directory / "model_signature.json").write_text(json.dumps(signature))
    assert main(["import-signature", str(directory / "model_signature.json")]) == 0
    monkeypatch.setenv("MODELCYCLE_SAGEMAKER_ROLE", ROLE)
    monkeypatch.setenv("MODELCYCLE_SAGEMAKER_BUCKET", BUCKET)

    use_case = UseCase(directory)
    outputs = use_case.train()
    job = json.loads((Path(outputs["model_dir"]).parent / "sagemaker.json").read_text())["name"]
    request = aws.requests[job]
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == "pytorch_train.py"
    assert {k: v for k, v in request["HyperParameters"].items() if not k.startswith("sagemaker_")} == {
        "batch-size": "128", "epochs": "1", "learning-rate": "0.001"}  # mlmonitor's system argument dropped
    assert request["ResourceConfig"]["InstanceType"] == "ml.c4.xlarge"
    log = (aws.jobs[job]["outcome"].job_dir / "logs" / "algo-1.log").read_text()
    assert "Test set: Average loss:" in log and (Path(outputs["model_dir"]) / "model.pth").is_file()

    # no metric_definitions configured: SageMaker parses the seeds' lines, the run gets their metrics
    from modelcycle.core.script_metrics import SEED_METRIC_DEFINITIONS

    assert request["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": d.name, "Regex": d.regex} for d in SEED_METRIC_DEFINITIONS]
    percent = float(re.findall(r"Accuracy: \d+/10000 \(([0-9.]+)%\)", log)[-1])
    loss = float(re.findall(r"Test set: Average loss: ([0-9.]+)", log)[-1])
    assert outputs["metrics"] == {"train_loss": pytest.approx(float(re.findall(r"Loss: ([0-9.]+)", log)[-1])),
                                  "test_loss": loss, "accuracy": percent / 100, "test_accuracy": percent / 100}
    assert 0.75 <= outputs["metrics"]["test_accuracy"] <= 0.9

    endpoint = use_case.deploy()
    container = boto3.client("sagemaker", region_name=REGION).describe_model(
        ModelName=endpoint["model_name"])["PrimaryContainer"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "pytorch_inference.py"
    assert use_case.cleanup()["serving"] == 3
