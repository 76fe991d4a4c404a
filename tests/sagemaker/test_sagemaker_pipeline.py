"""``modelcycle pipeline export``: the train → model → endpoint config → endpoint Step Functions
state machine (ASL), the create-state-machine input, and its picture. No AWS call is made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sagemaker")

from conftest import write_use_case  # noqa: E402
from test_sagemaker_platform import aws_json_request, BUCKET, REGION, aws, moto_server, no_internet  # noqa: E402,F401 - fixtures by name

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


# -- pipeline create | execute | status | delete against moto's Step Functions on 127.0.0.1 ---------------

WORKFLOW_ROLE = "arn:aws:iam::123456789012:role/StepFunctionsWorkflowExecutionRole"


class StepFunctionsRecorder:
    """WSGI middleware over moto: records every Step Functions request (action, JSON body) and,
    as the service's executor would, ends an execution at its n-th DescribeExecution with the
    outcome the test scripted (moto leaves executions RUNNING)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.outcomes: dict[str, tuple[int, str, str | None, str | None]] = {}
        self._described: dict[str, int] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        call = aws_json_request(environ, "AWSStepFunctions")
        if call is None:
            return self.app(environ, start_response)
        action, request = call
        self.calls.append((action, request))
        if action == "DescribeExecution":
            self._advance(request["executionArn"])
        return self.app(environ, start_response)

    def actions(self) -> list[str]:
        return [action for action, _ in self.calls]

    def requests(self, action: str) -> list[dict[str, Any]]:
        return [request for name, request in self.calls if name == action]

    def _advance(self, arn: str) -> None:
        from moto.core.utils import utcnow
        from moto.stepfunctions.models import stepfunctions_backends

        name = arn.rsplit(":", 1)[1]
        self._described[name] = seen = self._described.get(name, 0) + 1
        if name not in self.outcomes or seen < self.outcomes[name][0]:
            return
        _, status, error, cause = self.outcomes[name]
        execution = stepfunctions_backends["123456789012"][REGION].describe_execution(arn)
        execution.status, execution.error, execution.cause, execution.stop_date = status, error, cause, utcnow()


@pytest.fixture
def sfn(aws: Any, monkeypatch: pytest.MonkeyPatch) -> StepFunctionsRecorder:
    """The moto server with every Step Functions request recorded; polls without pauses."""
    from modelcycle.platforms.sagemaker import session

    recorder = StepFunctionsRecorder(aws.app)
    aws.app = recorder
    monkeypatch.setattr(session, "POLL_INTERVALS_S", (0.01,))
    return recorder


@pytest.fixture
def runnable_use_case(tmp_path: Path) -> Path:
    return write_use_case(
        tmp_path / "uc", name="mnist-sfn",
        training={"platform": "sagemaker", "role": ROLE, "bucket": BUCKET, "workflow_role": WORKFLOW_ROLE},
        serving={"platform": "sagemaker", "instance_type": "ml.m5.large"},
    )


def test_create_execute_status_delete_send_the_step_functions_calls(
    sfn: StepFunctionsRecorder, runnable_use_case: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelcycle.core.config import load_config
    from modelcycle.platforms.sagemaker.pipeline import state_machine

    uc = ["-C", str(runnable_use_case), "pipeline"]
    definition = state_machine(load_config(runnable_use_case))

    # create: CreateStateMachine with the exported definition and the workflow role
    assert main([*uc, "create"]) == 0
    arn = capsys.readouterr().out.strip()
    assert arn.endswith(":stateMachine:pytorch-mnist-sfn-pipeline")
    (created,) = sfn.requests("CreateStateMachine")
    assert created["name"] == "pytorch-mnist-sfn-pipeline"
    assert created["roleArn"] == WORKFLOW_ROLE and created["type"] == "STANDARD"
    assert json.loads(created["definition"]) == definition
    assert json.loads(created["definition"])["States"]["Train"]["Parameters"]["RoleArn"] == ROLE

    # create again: idempotent, an UpdateStateMachine of the same machine
    assert main([*uc, "create", "--workflow-role", WORKFLOW_ROLE + "2"]) == 0
    assert capsys.readouterr().out.strip() == arn
    (updated,) = sfn.requests("UpdateStateMachine")
    assert updated == {"stateMachineArn": arn, "definition": created["definition"], "roleArn": WORKFLOW_ROLE + "2"}
    assert len(sfn.requests("CreateStateMachine")) == 1

    # execute --wait: StartExecution, then DescribeExecution until SUCCEEDED
    sfn.outcomes["train-1"] = (3, "SUCCEEDED", None, None)
    assert main([*uc, "execute", "--name", "train-1", "--wait"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{arn.replace(':stateMachine:', ':execution:')}:train-1"
    assert sfn.requests("StartExecution") == [{"stateMachineArn": arn, "name": "train-1", "input": "{}"}]
    assert [r["executionArn"] for r in sfn.requests("DescribeExecution")] == [out.strip()] * 3
    assert "execution train-1: RUNNING" in err and "execution train-1: SUCCEEDED" in err

    # execute without --wait: the ARN at once, no polling
    calls = len(sfn.calls)
    assert main([*uc, "execute", "--name", "train-2"]) == 0
    assert capsys.readouterr().out.strip().endswith(":execution:pytorch-mnist-sfn-pipeline:train-2")
    assert "DescribeExecution" not in sfn.actions()[calls:]

    # a failed execution: non-zero, with its error and cause
    sfn.outcomes["train-3"] = (2, "FAILED", "States.TaskFailed", "ClientError: training job train-3 failed")
    assert main([*uc, "execute", "--name", "train-3", "--wait"]) == 2
    err = capsys.readouterr().err
    assert "execution train-3 ended FAILED: States.TaskFailed: ClientError: training job train-3 failed" in err

    # status: the newest executions first, the failed one with its error
    assert main([*uc, "status", "--limit", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["arn"] == arn
    assert [(e["name"], e["status"]) for e in shown["executions"]] == [("train-3", "FAILED"), ("train-2", "RUNNING")]
    assert shown["executions"][0]["error"] == "States.TaskFailed"
    assert sfn.requests("ListExecutions")[-1] == {"stateMachineArn": arn, "maxResults": 2}

    # delete: DeleteStateMachine; afterwards execute and status say to create it first
    assert main([*uc, "delete"]) == 0
    assert sfn.requests("DeleteStateMachine") == [{"stateMachineArn": arn}]
    capsys.readouterr()
    for action in ("execute", "status"):
        assert main([*uc, action]) == 2
        assert "state machine 'pytorch-mnist-sfn-pipeline' does not exist in us-east-1; create it first with " \
               "'modelcycle pipeline create'" in capsys.readouterr().err
    assert main([*uc, "delete"]) == 0
    assert "nothing to delete" in capsys.readouterr().err
    assert len(sfn.requests("DeleteStateMachine")) == 1


def test_create_names_every_missing_role_at_once_and_calls_nothing(
    sfn: StepFunctionsRecorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_use_case(tmp_path / "uc", name="norole", training={"platform": "sagemaker", "bucket": BUCKET})
    assert main(["-C", str(directory), "pipeline", "create"]) == 2
    err = capsys.readouterr().err
    assert "2 settings are missing" in err
    assert "training.role is not set" in err and "training.workflow_role is not set" in err
    assert "MODELCYCLE_SAGEMAKER_WORKFLOW_ROLE" in err
    assert sfn.calls == []


def test_an_invalid_execution_name_is_refused_before_any_call(
    sfn: StepFunctionsRecorder, runnable_use_case: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-C", str(runnable_use_case), "pipeline", "execute", "--name", "my_run"]) == 2
    assert "execution name 'my_run' is not a valid SageMaker name" in capsys.readouterr().err
    assert sfn.calls == []


def test_default_execution_names_are_valid_sagemaker_names() -> None:
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from modelcycle.platforms.sagemaker.workflow import execution_name

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert execution_name(SimpleNamespace(name="mnist_sfn"), now) == "mnist-sfn-20260102-030405"
    long = execution_name(SimpleNamespace(name="x" * 80), now)
    assert len(long) == 63 and long.endswith("-20260102-030405")
