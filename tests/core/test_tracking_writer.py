"""The detached tracking writer: spooled records reach MLflow exactly once, a killed trainer's run
ends KILLED, a dead writer's spool is replayed by the next reader, an unreachable store keeps the
spool, and ``modelcycle train`` returns before the writes end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from conftest import NO_LOGGED_MODELS, SMALL, write_use_case
from modelcycle.core.tracking import SPOOL_DIR, RunTracker, wait_for_pending_writes
from modelcycle.core.tracking_spool import LOG_NAME, SpoolFile, pending_spools, read_state, start_writer
from modelcycle.core.tracking_writer import main as writer_main

MODELCYCLE = Path(sys.executable).parent / "modelcycle"


def _store(work: Path) -> str:
    return f"sqlite:///{work / 'mlflow.db'}"


def _runs(work: Path, run_tag: str) -> list[Any]:
    client = MlflowClient(_store(work))
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`modelcycle.run_id` = '{run_tag}'")


def _spool(work: Path, run_tag: str, trainer_pid: int, ended: bool = True) -> SpoolFile:
    """A spool as a training process writes it: open, params, two epochs, tags, a text, end, close."""
    spool = SpoolFile(work / SPOOL_DIR, f"{run_tag}.{int(time.time() * 1000)}")
    started = int(time.time() * 1000) - 60_000
    spool.append("open", uri=_store(work), experiment="spooled", run_name=f"spooled-{run_tag}",
                 tags={"modelcycle.run_id": run_tag}, artifact_location=(work / "mlartifacts").as_uri(),
                 resume=False, abandoned=[], started_ms=started, trainer_pid=trainer_pid)
    spool.append("params", params={"learning_rate": "0.1", "model.hidden_channels": "20"})
    for step, accuracy in ((1, 0.5), (2, 0.75)):
        spool.append("metrics", metrics={"test_accuracy": accuracy}, step=step)
    spool.append("tags", tags={"modelcycle.note": "spooled"})
    spool.append("dataset", name="mnist", source=str(work), checksums={"a.gz": "0" * 32}, records={"train": 1})
    spool.append("text", text="a summary", artifact_file="model_summary.txt")
    if ended:
        spool.append("end", status="FINISHED", ended_ms=started + 30_000)
        spool.append("close")
    spool.close()
    return spool


def _assert_applied_once(work: Path, run_tag: str) -> Any:
    [run] = _runs(work, run_tag)
    client = MlflowClient(_store(work))
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.75)]
    assert run.data.params["learning_rate"] == "0.1" and run.data.tags["modelcycle.note"] == "spooled"
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["mnist"]
    return run


def test_a_replayed_spool_applies_nothing_twice(tmp_path: Path) -> None:
    spool = _spool(tmp_path, "replayed", os.getpid())
    copy = tmp_path / "copy.jsonl"
    shutil.copy(spool.path, copy)
    assert writer_main([str(spool.directory)]) == 0
    assert pending_spools(spool.directory) == []  # a complete spool is removed
    run = _assert_applied_once(tmp_path, "replayed")
    assert run.info.status == "FINISHED" and run.info.end_time - run.info.start_time == 30_000

    # a writer that crashed before saving any progress, then one that crashed after creating the run
    for state in ({}, {"applied": 0, "mlflow_run_id": run.info.run_id, "experiment_id": run.info.experiment_id}):
        shutil.copy(copy, spool.path)
        if state:
            spool.state_path.write_text(json.dumps(state))
        assert writer_main([str(spool.directory)]) == 0
        assert _assert_applied_once(tmp_path, "replayed").info.run_id == run.info.run_id


KILLABLE = """
import sys, time
from pathlib import Path
from modelcycle.core.tracking import RunTracker
tracker = RunTracker(sys.argv[1], "killable", "killable", {"modelcycle.run_id": "killable"}).start()
tracker.log_metrics({"test_accuracy": 0.5}, step=1)
print("logged", flush=True)
time.sleep(600)
"""


def test_the_run_of_a_killed_training_process_ends_killed_at_its_last_record(tmp_path: Path) -> None:
    trainer = subprocess.Popen([sys.executable, "-c", KILLABLE, _store(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout is not None and trainer.stdout.readline().strip() == "logged"
        last_record = int(time.time() * 1000)
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=60)
    wait_for_pending_writes(tmp_path)
    [run] = _runs(tmp_path, "killable")
    assert run.info.status == "KILLED"
    assert run.info.end_time <= last_record  # when the trainer last wrote, not when the writer noticed
    assert run.data.metrics["test_accuracy"] == 0.5
    assert pending_spools(tmp_path / SPOOL_DIR) == []


def test_a_reader_replays_the_spool_of_a_writer_that_died(tmp_path: Path) -> None:
    spool = _spool(tmp_path, "orphan", os.getpid(), ended=False)  # this process is the live trainer
    writer = start_writer(spool.directory)
    try:
        for _ in range(1200):  # the writer follows the spool: wait until it applied what is there
            if read_state(spool.path).get("applied", 0) == spool.path.stat().st_size:
                break
            time.sleep(0.1)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert read_state(spool.path)["mlflow_run_id"]
    with spool.path.open("a") as handle:  # the training ends while no writer runs
        handle.write(json.dumps({"op": "end", "ts": int(time.time() * 1000), "status": "FINISHED",
                                 "ended_ms": int(time.time() * 1000)}) + "\n")
        handle.write(json.dumps({"op": "close", "ts": int(time.time() * 1000)}) + "\n")
    wait_for_pending_writes(tmp_path)
    run = _assert_applied_once(tmp_path, "orphan")
    assert run.info.status == "FINISHED" and pending_spools(spool.directory) == []


def test_an_unreachable_store_is_reported_and_the_spool_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the store's directory would have to be")
    uri = f"sqlite:///{blocker}/mlflow.db"
    tracker = RunTracker(uri, "unreachable", "r", {"modelcycle.run_id": "unreachable"}, spool_dir=tmp_path / SPOOL_DIR)
    tracker.start().log_metrics({"test_accuracy": 0.5}, step=1)
    assert tracker.finish() is None  # training goes on untracked
    assert "writer log" in (tracker.error or "")
    capsys.readouterr()
    wait_for_pending_writes(tmp_path)  # the reader retries, and says why it could not
    warning = capsys.readouterr().err
    assert uri in warning and str(tmp_path / SPOOL_DIR / LOG_NAME) in warning and "kept" in warning
    [kept] = pending_spools(tmp_path / SPOOL_DIR)
    assert kept == tracker.spool.path and kept.read_text().count("\n") == 4  # open, metrics, end, close
    assert uri in (tmp_path / SPOOL_DIR / LOG_NAME).read_text()


def test_train_returns_before_the_model_is_logged_and_runs_shows_the_complete_run(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(tmp_path / "uc", name="detached", **SMALL)
    env = {k: v for k, v in os.environ.items() if k != NO_LOGGED_MODELS[0]}  # the model is logged (seconds)
    train = subprocess.run([str(MODELCYCLE), "train"], cwd=directory, capture_output=True, text=True, timeout=900,
                           env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    spools = pending_spools(directory / ".modelcycle" / SPOOL_DIR)
    assert spools, "train waited for the MLflow writes"
    runs = subprocess.run([str(MODELCYCLE), "runs", "--json"], cwd=directory, capture_output=True, text=True,
                          timeout=900, env=env)
    assert runs.returncode == 0, runs.stderr[-3000:]
    [listed] = json.loads(runs.stdout)
    assert listed["status"] == "FINISHED" and listed["metrics"]["test_accuracy"] > 0.3
    assert pending_spools(directory / ".modelcycle" / SPOOL_DIR) == []
    client = MlflowClient(f"sqlite:///{directory / '.modelcycle' / 'mlflow.db'}")
    [version] = client.search_model_versions("name = 'detached'")
    assert version.run_id == listed["mlflow_run_id"]
