"""Tests of modelcycle.core.lifecycle: stage prerequisites, idempotence, resume after a crash,
observers, the manifest, and deploy/status/cleanup on a real local endpoint.

Training is real (2,000 MNIST images, one epoch). One use case is trained per module and each
test that needs a trained use case works on its own copy of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import SMALL, isolated_module_env, write_use_case
from modelcycle import hookimpl
from modelcycle.core.errors import ConfigError, DatasetNotFoundError, StageError
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.state import StageRecord, State
from modelcycle.core.tracking import wait_for_pending_writes
from modelcycle.platforms.local.endpoints import process_alive, stop_endpoint


class Recorder:
    """An observer plugin recording the lifecycle broadcasts it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def on_stage_start(self, stage: str, use_case: Any) -> None:
        self.calls.append(("start", stage, use_case.config.name))

    @hookimpl
    def on_stage_end(self, stage: str, outputs: dict[str, Any]) -> None:
        self.calls.append(("end", stage, outputs.get("run_id")))

    @hookimpl
    def on_stage_error(self, stage: str, error: BaseException) -> None:
        self.calls.append(("error", stage, type(error).__name__))

    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], context: Any) -> None:
        self.calls.append(("epoch", epoch, dict(metrics), context.run_id))


@dataclass
class Trained:
    directory: Path
    outputs: dict[str, Any]
    recorder: Recorder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Trained]:
    """One use case trained once per module (with a recording observer)."""
    with isolated_module_env(tmp_path_factory, data_dir):
        directory = write_use_case(tmp_path_factory.mktemp("lifecycle") / "uc", name="small-mnist", **SMALL)
        recorder = Recorder()
        outputs = UseCase(directory, plugins=[recorder]).train()
        wait_for_pending_writes(directory / ".modelcycle")  # copies of it must not catch MLflow mid-write
    yield Trained(directory, outputs, recorder)


@pytest.fixture
def trained_copy(trained: Trained, tmp_path: Path) -> Path:
    """A private copy of the trained use case (its state points at the shared model directory)."""
    return Path(shutil.copytree(trained.directory, tmp_path / "uc"))


def _events(state: State, stage: str) -> list[str]:
    return [event["event"] for event in state.history if event["stage"] == stage]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process.wait(timeout=60) == 0
    return process.pid


# -- prerequisites and validation -------------------------------------------------------------


def test_deploy_before_train_tells_to_train(small_use_case: Path) -> None:
    use_case = UseCase(small_use_case)
    with pytest.raises(StageError) as info:
        use_case.deploy()
    message = str(info.value)
    assert info.value.stage == "deploy"
    assert "needs 'train' first" in message
    assert "modelcycle train" in message
    assert not (small_use_case / ".modelcycle" / "state.json").exists()
    assert use_case.status()["trained"] is False and use_case.status()["deployed"] is False


def test_score_before_deploy_tells_to_deploy(small_use_case: Path) -> None:
    with pytest.raises(StageError, match="not deployed: run 'modelcycle deploy' first"):
        UseCase(small_use_case).score(samples=1)


def test_run_until_an_unknown_stage_is_refused(small_use_case: Path) -> None:
    with pytest.raises(StageError, match=r"'run --until' takes one of: train, deploy"):
        UseCase(small_use_case).run(until="evaluate")


def test_bad_model_section_fails_before_any_state_is_written(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(tmp_path / "bad", name="bad-model", model={"architecture": "rnn"}, **SMALL)
    recorder = Recorder()
    for attempt in (lambda uc: uc.train(), lambda uc: uc.run(until="deploy")):
        with pytest.raises(ConfigError, match=r"model\.architecture"):
            attempt(UseCase(directory, plugins=[recorder]))
    assert not (directory / ".modelcycle" / "state.json").exists()
    assert not (directory / ".modelcycle" / "runs").exists()
    assert recorder.calls == []


def test_bad_model_section_leaves_an_existing_state_unchanged(trained_copy: Path) -> None:
    state_file = trained_copy / ".modelcycle" / "state.json"
    before = state_file.read_bytes()
    write_use_case(trained_copy, name="small-mnist", model={"architecture": "rnn"}, **SMALL)
    with pytest.raises(ConfigError, match=r"model\.architecture"):
        UseCase(trained_copy).train(force=True)
    assert state_file.read_bytes() == before


def test_failed_stage_is_recorded(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(
        tmp_path / "uc", name="no-data", data={"dataset": "mnist", "path": str(tmp_path / "nowhere")},
        hyperparameters=SMALL["hyperparameters"],
    )
    recorder = Recorder()
    use_case = UseCase(directory, plugins=[recorder])
    with pytest.raises(DatasetNotFoundError):
        use_case.train()
    state = use_case.state()
    record = state.stages["train"]
    assert record.status == "failed"
    assert record.error and record.error.startswith("DatasetNotFoundError: ")
    assert record.finished_at is not None
    assert _events(state, "train") == ["start", "failed"]
    assert recorder.calls == [("start", "train", "no-data"), ("error", "train", "DatasetNotFoundError")]
    assert use_case.status()["trained"] is False


# -- training ---------------------------------------------------------------------------------


def test_observers_see_the_training(trained: Trained) -> None:
    run_id = trained.outputs["run_id"]
    kinds = [call[0] for call in trained.recorder.calls]
    assert kinds == ["start", "epoch", "end"]
    assert trained.recorder.calls[0] == ("start", "train", "small-mnist")
    _, epoch, metrics, context_run_id = trained.recorder.calls[1]
    assert epoch == 1
    assert context_run_id == run_id
    assert set(metrics) >= {"train_loss", "test_loss", "test_accuracy"}
    assert 0.5 < metrics["test_accuracy"] <= 1.0  # 2,000 images, one epoch: well above chance
    assert trained.recorder.calls[2] == ("end", "train", run_id)
    assert trained.outputs["metrics"] == metrics


def test_train_outputs_and_state(trained: Trained) -> None:
    outputs = trained.outputs
    assert re.fullmatch(r"[0-9a-f]{32}", outputs["run_id"])
    assert outputs["framework"] == "pytorch" and outputs["platform"] == "local"
    model_dir = Path(outputs["model_dir"])
    assert model_dir == trained.directory.resolve() / ".modelcycle" / "runs" / outputs["run_id"] / "model"
    assert (model_dir / "model.pth").is_file()
    assert Path(outputs["archive"]).is_file()
    assert [h["epoch"] for h in outputs["history"]] == [1.0]
    state = UseCase(trained.directory).state()
    assert state.done("train")
    assert state.stages["train"].outputs == outputs
    assert state.stages["train"].pid == os.getpid()
    assert _events(state, "train") == ["start", "done"]


def test_manifest_records_lineage(trained: Trained, data_dir: Path) -> None:
    model_dir = Path(trained.outputs["model_dir"])
    manifest = json.loads((model_dir / "modelcycle.json").read_text())
    state = UseCase(trained.directory).state()
    assert manifest["run_id"] == state.stages["train"].outputs["run_id"] == trained.outputs["run_id"]
    assert manifest["framework"] == "pytorch"
    assert manifest["use_case"] == "small-mnist"
    checksums = manifest["dataset"]["checksums"]
    assert len(checksums) == 4
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in checksums.values())
    actual = {name: hashlib.md5((data_dir / "mnist" / name).read_bytes()).hexdigest() for name in checksums}
    assert checksums == actual
    assert manifest["dataset"]["name"] == "mnist"
    assert (manifest["dataset"]["train_records"], manifest["dataset"]["test_records"]) == (2000, 500)
    assert manifest["input_schema"]["shape"] == [1, 28, 28]
    preprocessing = manifest["preprocessing"]
    assert preprocessing["scale"] == 255.0
    assert preprocessing["mean"] == [pytest.approx(0.1307, abs=1e-4)]
    assert preprocessing["std"] == [pytest.approx(0.3081, abs=1e-4)]
    assert manifest["classes"] == [str(digit) for digit in range(10)]
    assert manifest["model"]["architecture"] == "cnn"
    assert manifest["hyperparameters"]["epochs"] == 1
    assert manifest["metrics"] == trained.outputs["metrics"]
    assert manifest["model_files"] == ["model.pth"]
    with tarfile.open(trained.outputs["archive"]) as archive:
        names = set(archive.getnames())
    assert {"modelcycle.json", "model.pth", "code/inference.py", "code/requirements.txt"} <= names


def test_train_is_idempotent_and_force_retrains(trained: Trained, trained_copy: Path) -> None:
    recorder = Recorder()
    use_case = UseCase(trained_copy, plugins=[recorder])
    before = use_case.state()
    runs = sorted(p.name for p in (trained_copy / ".modelcycle" / "runs").iterdir())

    again = use_case.train()
    assert again["run_id"] == trained.outputs["run_id"]
    assert recorder.calls == []  # no stage started, nothing trained
    after = use_case.state()
    assert after.stages["train"] == before.stages["train"]
    assert after.history == before.history
    assert sorted(p.name for p in (trained_copy / ".modelcycle" / "runs").iterdir()) == runs

    forced = use_case.train(force=True)
    assert forced["run_id"] != trained.outputs["run_id"]
    assert [call[0] for call in recorder.calls] == ["start", "epoch", "end"]
    state = use_case.state()
    assert state.stages["train"].outputs["run_id"] == forced["run_id"]
    assert _events(state, "train") == ["start", "done", "start", "done"]
    new_model = trained_copy.resolve() / ".modelcycle" / "runs" / forced["run_id"] / "model"
    assert Path(forced["model_dir"]) == new_model
    assert json.loads((new_model / "modelcycle.json").read_text())["run_id"] == forced["run_id"]


def test_resume_after_a_crash_retrains(small_use_case: Path) -> None:
    dead = _dead_pid()
    work = small_use_case / ".modelcycle"
    work.mkdir()
    crashed = {
        "version": 1,
        "stages": {"train": {"status": "running", "started_at": "2024-01-01T00:00:00.000+00:00", "pid": dead}},
        "history": [{"at": "2024-01-01T00:00:00.000+00:00", "stage": "train", "event": "start", "pid": dead}],
    }
    (work / "state.json").write_text(json.dumps(crashed))
    assert UseCase(small_use_case).state().stages["train"].interrupted()

    results = UseCase(small_use_case).run(until="train")
    assert list(results) == ["train"]
    state = UseCase(small_use_case).state()
    assert state.done("train")
    assert state.stages["train"].outputs["run_id"] == results["train"]["run_id"]
    assert state.stages["train"].pid == os.getpid()
    assert _events(state, "train") == ["start", "interrupted", "start", "done"]
    interrupted = next(event for event in state.history if event["event"] == "interrupted")
    assert interrupted["previous_pid"] == dead
    assert Path(results["train"]["model_dir"], "modelcycle.json").is_file()


# -- deploy, status, cleanup ------------------------------------------------------------------


def test_deploy_status_cleanup(trained: Trained, trained_copy: Path) -> None:
    use_case = UseCase(trained_copy)
    endpoint: dict[str, Any] | None = None
    try:
        results = use_case.run(until="deploy")
        assert results["train"]["run_id"] == trained.outputs["run_id"]  # not retrained
        endpoint = results["deploy"]
        pid = endpoint["pid"]
        assert process_alive(pid)
        assert endpoint["name"] == f"small-mnist-{trained.outputs['run_id'][:8]}"
        assert endpoint["run_id"] == trained.outputs["run_id"]

        status = use_case.status()
        assert status["trained"] is True and status["deployed"] is True
        assert status["run_id"] == trained.outputs["run_id"]
        assert status["endpoint"]["status"] == "InService"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", status["endpoint"]["url"])
        assert status["endpoint"]["url"] == endpoint["url"]

        assert use_case.deploy()["pid"] == pid  # in service: deploy again is a no-op

        scored = use_case.score(samples=5)
        assert len(scored.predictions) == 5 and len(scored.labels) == 5
        assert all(0 <= p <= 9 for p in scored.predictions)
        assert all(sum(row) == pytest.approx(1.0, abs=1e-3) for row in scored.probabilities)

        assert use_case.cleanup() == {"serving": 1}
        assert not process_alive(pid)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        status = use_case.status()
        assert status["deployed"] is False
        assert status["trained"] is True
        assert status["endpoint"] is None
        assert use_case.state().stages["deploy"].status == "pending"
        assert use_case.cleanup() == {"serving": 0}
    finally:
        record = endpoint or use_case.state().stages.get("deploy", StageRecord()).outputs
        if record.get("pid") and process_alive(record["pid"]):
            stop_endpoint(record)
        assert not process_alive(record.get("pid"))


def test_failed_redeploy_keeps_the_old_endpoint_serving_and_the_state(trained: Trained, trained_copy: Path) -> None:
    from modelcycle.core.artifacts import hash_files, read_manifest, write_manifest
    from modelcycle.core.errors import EndpointError
    from modelcycle.core.state import StateStore

    use_case = UseCase(trained_copy)
    before: dict[str, Any] = {}
    try:
        before = use_case.deploy()
        broken = Path(shutil.copytree(before["model_dir"], trained_copy / "broken-model"))
        (broken / "model.pth").write_bytes(b"not a torch file")
        # hashes recorded anew: the model passes the integrity check and dies in the new process
        manifest = read_manifest(broken)
        write_manifest(broken, manifest.model_copy(update={"files": hash_files(broken)}))
        store = StateStore(trained_copy / ".modelcycle")
        state = store.read()
        state.stages["train"].outputs["model_dir"] = str(broken)  # the next deploy serves a broken model
        store.write(state)

        with pytest.raises(EndpointError, match="exited with code"):
            use_case.deploy(force=True)

        after = use_case.state()
        assert after.stages["deploy"].status == "done" and after.stages["deploy"].outputs == before
        assert _events(after, "deploy")[-2:] == ["failed", "kept"]
        assert process_alive(before["pid"])
        assert use_case.endpoint()["status"] == "InService"  # type: ignore[index]
        assert len(use_case.score(samples=3).predictions) == 3
    finally:
        if before.get("pid") and process_alive(before["pid"]):
            stop_endpoint(before)
