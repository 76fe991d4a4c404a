"""A killed training resumes: ``modelcycle train`` as a real process, SIGKILLed during epoch 2,
then ``train`` again continues the same run and MLflow run from epoch 2 and ends where an
uninterrupted run ends; ``--restart`` starts over; ``status`` shows the gap as interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from conftest import write_use_case
from modelcycle.core.attempts import ATTEMPT_FILE
from modelcycle.core.checkpoints import CheckpointError, CheckpointStore
from modelcycle.core.lifecycle import UseCase

#: 3 epochs on 4,000 images: epoch 2 starts after a few seconds
RESUMABLE = {
    "data": {"dataset": "mnist", "train_limit": 4000, "test_limit": 1000},
    "hyperparameters": {"epochs": 3, "log_interval": 5},
}
#: 2 epochs on 2,000 images, for the cases compared with no reference run (they check epochs and runs)
SHORT = {
    "data": {"dataset": "mnist", "train_limit": 2000, "test_limit": 500},
    "hyperparameters": {"epochs": 2, "log_interval": 2},
}
EPOCH_LINE = re.compile(r"^Train Epoch: (\d+) ")
ACCURACY_LINE = re.compile(r"^test accuracy ([\d.]+)%")


def _cli(directory: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelcycle.cli", *args], cwd=directory, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )


def _kill_during_epoch_2(directory: Path) -> list[str]:
    """Run ``modelcycle train`` and SIGKILL it at its first ``Train Epoch: 2`` line (epoch 1's
    checkpoint is committed by then); returns the lines it printed."""
    process = _cli(directory, "train")
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = EPOCH_LINE.match(line)
            if match and int(match.group(1)) >= 2:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(lines[-20:])
    return lines


def _train(directory: Path, *args: str) -> tuple[list[str], str]:
    process = _cli(directory, "train", *args)
    try:
        output, _ = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-3000:]
    return output.splitlines(), output


def _epochs(lines: list[str]) -> list[int]:
    return sorted({int(m.group(1)) for line in lines if (m := EPOCH_LINE.match(line))})


def _accuracy(output: str) -> float:
    found = [float(m.group(1)) for line in output.splitlines() if (m := ACCURACY_LINE.match(line))]
    assert found, output[-2000:]
    return found[-1]


def _attempt(directory: Path) -> dict[str, Any]:
    records = sorted((directory / ".modelcycle" / "runs").glob(f"*/{ATTEMPT_FILE}"), key=lambda p: p.stat().st_mtime)
    assert records
    return json.loads(records[-1].read_text())


def _mlflow_runs(directory: Path, run_id: str) -> list[Any]:
    from modelcycle.core.tracking import wait_for_pending_writes

    wait_for_pending_writes(directory / ".modelcycle")  # what the detached writer has yet to apply
    client = MlflowClient(f"sqlite:///{directory / '.modelcycle' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`modelcycle.run_id` = '{run_id}'")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> float:
    """The test accuracy (percent) of an uninterrupted run with the same seed."""
    directory = write_use_case(tmp_path_factory.mktemp("reference") / "uc", name="resume-ref", **RESUMABLE)
    lines, output = _train(directory)
    assert _epochs(lines) == [1, 2, 3]
    return _accuracy(output)


def test_a_killed_training_resumes_the_same_run_from_its_last_complete_epoch(
    tmp_path: Path, data_dir: Path, reference: float
) -> None:
    directory = write_use_case(tmp_path / "uc", name="resume", **RESUMABLE)
    first = _kill_during_epoch_2(directory)
    assert _epochs(first) == [1, 2]
    killed = _attempt(directory)
    run_id = killed["run_id"]
    assert killed["status"] == "running" and killed["attempt"] == 1

    # the gap: status says interrupted, in the API, --json and the table
    status = UseCase(directory).status()
    assert status["stages"]["train"] == "interrupted"
    assert status["training"] == {"run_id": run_id, "status": "interrupted", "attempt": 1, "epochs": 3,
                                  "last_complete_epoch": 1}
    table = subprocess.run([sys.executable, "-m", "modelcycle.cli", "status"], cwd=directory,
                           capture_output=True, text=True, timeout=120)
    assert "train:          interrupted" in table.stdout and f"training run    {run_id} interrupted after epoch 1 of 3" in table.stdout
    as_json = json.loads(subprocess.run([sys.executable, "-m", "modelcycle.cli", "status", "--json"], cwd=directory,
                                        capture_output=True, text=True, timeout=120).stdout)
    assert as_json["stages"]["train"] == "interrupted"
    # the MLflow run of the killed attempt is visible, ended KILLED by the tracking writer
    runs = _mlflow_runs(directory, run_id)
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    mlflow_run_id = runs[0].info.run_id

    lines, output = _train(directory)
    assert _epochs(lines) == [2, 3], "the resumed run must start at epoch 2"
    assert f"Resuming run {run_id} after epoch 1" in output
    assert f"Current RunID {run_id}" in output
    outputs = UseCase(directory).state().stage("train").outputs
    assert outputs["run_id"] == run_id and outputs["mlflow_run_id"] == mlflow_run_id
    assert outputs["resumed_from_epoch"] == 1 and outputs["attempt"] == 2
    assert abs(_accuracy(output) - reference) <= 0.3, (reference, _accuracy(output))

    runs = _mlflow_runs(directory, run_id)
    assert [r.info.run_id for r in runs] == [mlflow_run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["modelcycle.attempts"] == "2"
    client = MlflowClient(outputs["tracking_uri"])
    assert sorted(m.step for m in client.get_metric_history(mlflow_run_id, "test_accuracy")) == [1, 2, 3]
    assert _attempt(directory)["status"] == "finished"
    assert not (directory / ".modelcycle" / "runs" / run_id / "checkpoint").exists()  # the model supersedes it
    assert UseCase(directory).status()["training"] is None


def test_restart_abandons_the_interrupted_run_and_starts_at_epoch_1(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(tmp_path / "uc", name="restart", **SHORT)
    _kill_during_epoch_2(directory)
    killed = _attempt(directory)["run_id"]

    lines, output = _train(directory, "--restart")
    assert _epochs(lines) == [1, 2]
    assert "Resuming" not in output and "the old one is abandoned" in output
    outputs = UseCase(directory).state().stage("train").outputs
    assert outputs["run_id"] != killed and outputs["resumed_from_epoch"] == 0 and outputs["attempt"] == 1
    (old,) = _mlflow_runs(directory, killed)
    assert old.info.status == "KILLED"
    (new,) = _mlflow_runs(directory, outputs["run_id"])
    assert new.info.status == "FINISHED"
    assert json.loads((directory / ".modelcycle" / "runs" / killed / ATTEMPT_FILE).read_text())["status"] == "abandoned"


def test_a_changed_configuration_starts_a_new_run(tmp_path: Path, data_dir: Path) -> None:
    """A resumed run must continue the same schedule: other hyperparameters mean a new run."""
    directory = write_use_case(tmp_path / "uc", name="changed", **SHORT)
    _kill_during_epoch_2(directory)
    killed = _attempt(directory)["run_id"]
    outputs = UseCase(directory, overrides={"hyperparameters.epochs": 1}).train()
    assert outputs["run_id"] != killed and outputs["resumed_from_epoch"] == 0


@pytest.mark.parametrize("example", ["mnist-lightning", "mnist-keras"])
def test_other_frameworks_resume_from_epoch_2(tmp_path: Path, data_dir: Path, example: str) -> None:
    directory = write_use_case(tmp_path / "uc", example=example, name=f"resume-{example}", **SHORT)
    _kill_during_epoch_2(directory)
    run_id = _attempt(directory)["run_id"]
    lines, output = _train(directory)
    assert _epochs(lines) == [2]
    assert f"Resuming run {run_id} after epoch 1" in output and f"Current RunID {run_id}" in output
    outputs = UseCase(directory).state().stage("train").outputs
    assert outputs["resumed_from_epoch"] == 1 and [h["epoch"] for h in outputs["history"]] == [1.0, 2.0]
    assert outputs["metrics"]["test_accuracy"] > 0.8
    (run,) = _mlflow_runs(directory, run_id)
    assert run.info.run_id == outputs["mlflow_run_id"] and run.info.status == "FINISHED"


# -- the checkpoint store (no training) -----------------------------------------------------
def _write(files: dict[str, bytes]) -> Any:
    def write(directory: Path) -> list[str]:
        for name, data in files.items():
            (directory / name).write_bytes(data)
        return list(files)

    return write


def test_a_commit_is_atomic_and_keeps_only_the_last_complete_epoch(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoint")
    assert store.latest() is None
    store.commit(1, _write({"w": b"one"}), [{"epoch": 1.0, "test_accuracy": 0.5}])

    def crash(directory: Path) -> list[str]:  # a process dying while epoch 2 is written
        (directory / "w").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.commit(2, crash, [])
    latest = store.latest()
    assert latest is not None and latest.epoch == 1 and (latest.directory / "w").read_bytes() == b"one"
    assert latest.history == [{"epoch": 1.0, "test_accuracy": 0.5}]
    store.commit(2, _write({"w": b"two"}), [])
    assert store.latest().epoch == 2  # type: ignore[union-attr]
    assert sorted(p.name for p in store.root.iterdir()) == ["epoch-0002", "last.json"]


def test_a_damaged_marker_names_the_file_and_the_fix(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoint")
    store.commit(1, _write({"w": b"one"}), [])
    store.marker.write_bytes(b'{"epoch": 1, "direc')
    with pytest.raises(CheckpointError, match=r"last\.json.*train --restart"):
        store.latest()
    store.marker.write_text(json.dumps({"epoch": 1, "directory": "epoch-0009"}))
    with pytest.raises(CheckpointError, match="epoch-0009"):
        store.latest()
