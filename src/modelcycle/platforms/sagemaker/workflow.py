"""The exported pipeline run on AWS Step Functions: create, execute, status, delete.

The state machine is the definition :func:`~modelcycle.platforms.sagemaker.pipeline.state_machine`
writes, named as ``pipeline export --format json`` names it (``<framework>-<use case>-pipeline``).
Step Functions runs it as the *workflow role* (``training.workflow_role``,
``MODELCYCLE_SAGEMAKER_WORKFLOW_ROLE`` or ``--workflow-role``: an IAM role trusting
``states.amazonaws.com`` that may call the SageMaker actions and pass the SageMaker execution
role); the training job, model and endpoint run as ``training.role``.

- :func:`create` is idempotent: CreateStateMachine, or UpdateStateMachine when it exists.
- :func:`execute` starts an execution (its name names the training job, model, endpoint config and
  endpoint) and returns its ARN; ``wait`` polls DescribeExecution until a terminal status and
  raises :class:`~modelcycle.core.errors.StageError` with the execution's error and cause unless
  it SUCCEEDED.
- :func:`status` lists the newest executions; :func:`delete` removes the state machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from modelcycle.core.errors import ConfigError, StageError
from modelcycle.platforms.sagemaker import pipeline
from modelcycle.platforms.sagemaker import session as aws

__all__ = ["ENV_WORKFLOW_ROLE", "TERMINAL", "create", "execute", "status", "delete", "execution_name"]

ENV_WORKFLOW_ROLE = "MODELCYCLE_SAGEMAKER_WORKFLOW_ROLE"
#: Execution statuses after which nothing changes any more.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass(frozen=True)
class _Target:
    settings: aws.AwsSettings
    name: str
    client: Any


def _problems(exc: ConfigError) -> list[str]:
    """The items of a :func:`~modelcycle.platforms.sagemaker.session.resolve_settings` error
    (one message, or ``N settings are missing:`` and one ``  - item`` per line)."""
    text = str(exc)
    return text.split("\n  - ")[1:] if "\n  - " in text else [text]


def _target(config: Any, workflow_role: str | None = None, role_needed: bool = False) -> tuple[_Target, str | None]:
    """The use case's AWS settings, state machine name and Step Functions client, plus the
    workflow role (required when ``role_needed``).

    Raises:
        ConfigError: everything missing at once (SageMaker role, region, bucket, workflow role).
    """
    problems: list[str] = []
    settings = None
    try:
        settings = aws.resolve_settings(config.training, config.name, bucket_needed_for="the pipeline")
    except ConfigError as exc:
        problems.extend(_problems(exc))
    role = workflow_role or getattr(config.training, "workflow_role", None) or os.environ.get(ENV_WORKFLOW_ROLE)
    if role_needed and not role:
        problems.append(
            "training.workflow_role is not set: the IAM role Step Functions assumes to run the pipeline (trusts "
            "states.amazonaws.com, may call SageMaker and pass training.role; e.g. "
            "arn:aws:iam::123456789012:role/StepFunctionsWorkflowExecutionRole); set it in modelcycle.yaml, pass "
            f"--workflow-role ARN, or export {ENV_WORKFLOW_ROLE}"
        )
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} settings are missing:\n" + "\n".join(f"  - {p}" for p in problems))
    assert settings is not None
    name = pipeline.create_state_machine_input(config, {}, role)["name"]
    client = aws.boto_session(settings.region).client("stepfunctions")
    return _Target(settings, name, client), role


def _call(action: str, call: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise aws.aws_error(action, exc) from exc


def _find(target: _Target) -> str | None:
    """The ARN of the use case's state machine, ``None`` when there is none."""
    paginator = target.client.get_paginator("list_state_machines")
    pages = _call("listing state machines", lambda: list(paginator.paginate()))
    for page in pages:
        for machine in page.get("stateMachines", []):
            if machine["name"] == target.name:
                return str(machine["stateMachineArn"])
    return None


def _require(target: _Target, command: str) -> str:
    arn = _find(target)
    if arn is None:
        raise ConfigError(
            f"pipeline {command}: the state machine '{target.name}' does not exist in {target.settings.region}; "
            "create it first with 'modelcycle pipeline create'"
        )
    return arn


def create(config: Any, workflow_role: str | None = None, upload: bool = False) -> dict[str, Any]:
    """Create the state machine, or update its definition and role when it exists.

    Returns:
        ``{"name", "arn", "action": "created" | "updated", "states", "uploaded"}``.

    Raises:
        ConfigError: missing settings (every one named), a framework without a SageMaker container.
    """
    target, role = _target(config, workflow_role, role_needed=True)
    definition = pipeline.state_machine(config)
    document = pipeline.create_state_machine_input(config, definition, role)
    uploaded = pipeline.upload_inputs(config) if upload else {}
    arn = _find(target)
    if arn is None:
        created = _call(f"creating state machine {target.name}", target.client.create_state_machine, **document)
        arn, action = created["stateMachineArn"], "created"
    else:
        _call(f"updating state machine {target.name}", target.client.update_state_machine,
              stateMachineArn=arn, definition=document["definition"], roleArn=document["roleArn"])
        action = "updated"
    return {"name": target.name, "arn": arn, "action": action, "states": len(definition["States"]),
            "uploaded": uploaded}


def execution_name(config: Any, now: datetime | None = None) -> str:
    """``<use case>-<UTC yyyymmdd-hhmmss>``: a valid SageMaker (and Step Functions) name."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"-{2,}", "-", re.sub(r"[^a-zA-Z0-9-]+", "-", config.name)).strip("-")[:63 - len(stamp) - 1]
    return f"{base.rstrip('-') or 'modelcycle'}-{stamp}"


def _summary(described: dict[str, Any]) -> dict[str, Any]:
    summary = {
        "name": described["name"],
        "arn": described["executionArn"],
        "status": described["status"],
        "started": _iso(described.get("startDate")),
        "stopped": _iso(described.get("stopDate")),
    }
    for key in ("error", "cause"):
        if described.get(key):
            summary[key] = described[key]
    return summary


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _wait(target: _Target, arn: str, timeout_s: float | None) -> dict[str, Any]:
    """The execution's description once it has ended (:data:`TERMINAL`)."""
    return aws.wait_until(
        lambda: _call(f"describing execution {arn}", target.client.describe_execution, executionArn=arn),
        lambda d: d["status"], lambda d: d["status"] in TERMINAL, timeout_s,
        lambda d: StageError("pipeline", f"execution {arn} still {d['status']} after {timeout_s:.0f} s (--timeout); "
                                         "'modelcycle pipeline status' follows it"),
        f"execution {arn.rsplit(':', 1)[-1]}")


def execute(config: Any, name: str | None = None, wait: bool = False, timeout_s: float | None = None) -> dict[str, Any]:
    """Start an execution named ``name`` (default :func:`execution_name`); with ``wait``, until it ends.

    Returns:
        ``{"name", "arn", "status", ...}``; after ``wait`` also ``started``/``stopped``.

    Raises:
        ConfigError: a bad name, missing settings, no state machine (create it first).
        StageError: (``wait``) the execution ended FAILED, TIMED_OUT or ABORTED (its error and cause).
    """
    name = name or execution_name(config)
    if not _NAME.match(name):
        raise ConfigError(f"execution name '{name}' is not a valid SageMaker name: it names the training job, model "
                          "and endpoint, so use letters, digits and hyphens (at most 63, no leading hyphen)")
    target, _ = _target(config)
    arn = _require(target, "execute")
    started = _call(f"starting an execution of {target.name}", target.client.start_execution,
                    stateMachineArn=arn, name=name, input="{}")
    result: dict[str, Any] = {"name": name, "arn": started["executionArn"], "status": "RUNNING",
                              "state_machine": arn}
    if not wait:
        return result
    described = _wait(target, started["executionArn"], timeout_s)
    result.update(_summary(described))
    if described["status"] != "SUCCEEDED":
        raise StageError("pipeline", (
            f"execution {name} ended {described['status']}: {described.get('error') or 'no error given'}: "
            f"{described.get('cause') or 'no cause given'}. The failed step's details are in the Step Functions "
            f"console ({started['executionArn']}) and the SageMaker job's CloudWatch logs"
        ))
    return result


def status(config: Any, limit: int = 5) -> dict[str, Any]:
    """The state machine and its ``limit`` newest executions (with error and cause when they failed).

    Raises:
        ConfigError: missing settings; no state machine (create it first).
    """
    if limit < 1:
        raise ConfigError(f"pipeline status: --limit must be at least 1, got {limit}")
    target, _ = _target(config)
    arn = _require(target, "status")
    listed = _call(f"listing executions of {target.name}", target.client.list_executions,
                   stateMachineArn=arn, maxResults=limit)["executions"]
    listed.sort(key=lambda e: e["startDate"], reverse=True)
    executions = []
    for item in listed[:limit]:
        described = item if item["status"] in ("RUNNING", "SUCCEEDED") else _call(
            f"describing execution {item['executionArn']}", target.client.describe_execution,
            executionArn=item["executionArn"])
        executions.append(_summary(described))
    return {"name": target.name, "arn": arn, "executions": executions}


def delete(config: Any) -> dict[str, Any]:
    """Delete the state machine (its running executions are stopped by Step Functions);
    ``deleted`` is 0 when there was none."""
    target, _ = _target(config)
    arn = _find(target)
    if arn is None:
        return {"name": target.name, "arn": None, "deleted": 0}
    _call(f"deleting state machine {target.name}", target.client.delete_state_machine, stateMachineArn=arn)
    return {"name": target.name, "arn": arn, "deleted": 1}
