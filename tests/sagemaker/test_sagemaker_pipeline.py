"""``modelcycle pipeline export``: the train → model → endpoint config → endpoint Step Functions
state machine (ASL), the create-state-machine input, and its picture. No AWS call is made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("sagemaker")

from conftest import write_use_case  # noqa: E402

from modelcycle.cli import main  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"


@pytest.fixture
def pipeline_use_case(tmp_path: Path) -> Path:
    return write_use_case(
        tmp_path / "uc", name="mnist-sfn",
        hyperparameters={"epochs": 6},
        training={"platform": "sagemaker", "role": ROLE, "bucket": "my-bucket", "prefix": "sagemaker/DEMO-pytorch-mnist",
                  "instance_count": 2, "instance_type": "ml.c4.xlarge", "backend": "gloo"},
        serving={"platform": "sagemaker", "instance_type": "ml.m5.large", "instance_count": 2},
    )


def test_export_writes_a_valid_asl_state_machine(pipeline_use_case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "pipeline.asl.json"
    assert main(["-C", str(pipeline_use_case), "pipeline", "export", "-o", str(target)]) == 0
    definition = json.loads(target.read_text())
    states = definition["States"]

    # the chain: StartAt → Next ... → End, every task a SageMaker service integration
    chain, current = [], definition["StartAt"]
    while True:
        chain.append(current)
        if states[current].get("End"):
            break
        current = states[current]["Next"]
    assert chain == ["Train", "Create Model", "Create Endpoint Config", "Create Endpoint"]
    assert [states[name]["Resource"] for name in chain] == [
        "arn:aws:states:::sagemaker:createTrainingJob.sync",
        "arn:aws:states:::sagemaker:createModel",
        "arn:aws:states:::sagemaker:createEndpointConfig",
        "arn:aws:states:::sagemaker:createEndpoint",
    ]
    assert all(states[name]["Type"] == "Task" for name in chain)
    for name, state in states.items():  # every transition lands on a state
        targets = [state.get("Next")] + [c["Next"] for c in state.get("Catch", [])]
        assert all(t in states for t in targets if t), name
    assert states["Pipeline Failed"]["Type"] == "Fail"

    # parameters filled from the use case's config
    train = states["Train"]["Parameters"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == \
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6-cpu-py312"
    assert train["RoleArn"] == ROLE
    assert train["ResourceConfig"] == {"InstanceCount": 2, "InstanceType": "ml.c4.xlarge", "VolumeSizeInGB": 30}
    assert train["HyperParameters"]["epochs"] == "6" and train["HyperParameters"]["backend"] == '"gloo"'
    assert train["HyperParameters"]["sagemaker_program"] == '"train.py"'
    assert train["OutputDataConfig"]["S3OutputPath"] == "s3://my-bucket/sagemaker/DEMO-pytorch-mnist/output"
    assert [c["DataSource"]["S3DataSource"]["S3Uri"] for c in train["InputDataConfig"]] == [
        "s3://my-bucket/sagemaker/DEMO-pytorch-mnist/data/mnist/training/",
        "s3://my-bucket/sagemaker/DEMO-pytorch-mnist/data/mnist/testing/",
    ]
    model = states["Create Model"]["Parameters"]
    assert model["PrimaryContainer"]["ModelDataUrl.$"] == "$.Training.ModelArtifacts.S3ModelArtifacts"
    assert model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6-cpu-py312")
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    variant = states["Create Endpoint Config"]["Parameters"]["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 2)
    assert states["Create Endpoint"]["Parameters"] == {"EndpointName.$": "$$.Execution.Name", "EndpointConfigName.$": "$$.Execution.Name"}


def test_json_format_is_the_create_state_machine_input_and_graph_is_a_png(
    pipeline_use_case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "pipeline.png"
    role = "arn:aws:iam::123456789012:role/StepFunctionsWorkflowExecutionRole"
    assert main(["-C", str(pipeline_use_case), "pipeline", "export", "--format", "json",
                 "--workflow-role", role, "--graph", str(graph)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["roleArn"] == role and document["type"] == "STANDARD"
    assert json.loads(document["definition"])["StartAt"] == "Train"
    data = graph.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_export_without_a_role_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write_use_case(tmp_path / "uc", name="norole", training={"platform": "sagemaker", "bucket": "b"})
    assert main(["-C", str(directory), "pipeline", "export"]) == 2
    assert "training.role is not set" in capsys.readouterr().err
