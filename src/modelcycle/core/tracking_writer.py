"""The detached MLflow writer: applies the spools of one directory, in order, then exits.

Started by a training process (``python -m modelcycle.core.tracking_writer <spool dir>``, see
:mod:`.tracking_spool`) or by a reader that finds spools left with no writer. One writer works on
a directory at a time (its ``writer.lock``); it follows each spool, oldest first, until the
spool's ``close`` record, or until its training process is gone — then a run without an ``end``
record is ended ``KILLED`` at the time of its last record. A complete spool is removed.

Replays are idempotent: the applied byte offset is saved after every record, and the records
a crash may apply twice are harmless (the run is found again by its ``modelcycle.run_id`` tag
and start time; a metric carries its recorded timestamp, so the store keeps one copy; params,
tags, texts and artifacts are rewritten as they were; a model is not logged twice for a run).

An unreachable store stops the writer on that spool with the error in its state and log; the
spool is kept for the next replay. Training never waits for any of this.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from modelcycle.core.attempts import pid_alive
from modelcycle.core.library_logs import route_library_logs
from modelcycle.core.tracking import (
    EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, mlflow_client, tag_experiment_kind,
)
from modelcycle.core.tracking_spool import pending_spools, read_state, state_path, write_state, writer_lock

__all__ = ["main", "apply_spool", "StoreUnreachable"]

#: how often a followed spool is polled for new records (seconds)
POLL_S = 0.1


class StoreUnreachable(RuntimeError):
    """The MLflow store did not answer: the spool is kept for a later replay."""


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {message}", flush=True)


class _Run:
    """Applies the records of one spool to its MLflow run."""

    def __init__(self, spool: Path, opening: dict[str, Any], state: dict[str, Any]) -> None:
        self.spool = spool
        self.opening = opening
        self.state = state
        self.uri: str = opening["uri"]
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mlflow_client(self.uri)
        return self._client

    @property
    def run_id(self) -> str:
        return str(self.state["mlflow_run_id"])

    def apply(self, record: dict[str, Any]) -> None:
        getattr(self, f"_op_{record['op']}")(record)

    # -- the records -----------------------------------------------------------------------
    def _op_open(self, record: dict[str, Any]) -> None:
        if self.state.get("mlflow_run_id"):
            return
        client = self.client
        experiment = self._experiment(record)
        for abandoned in record.get("abandoned", ()):
            old = self._find(experiment, abandoned)
            if old is not None and old.info.status == "RUNNING":
                client.set_terminated(old.info.run_id, "KILLED")
        tags: dict[str, str] = record["tags"]
        run_tag = tags.get("modelcycle.run_id", "")
        previous = self._find(experiment, run_tag) if run_tag else None
        if previous is not None and (record.get("resume") or previous.info.start_time == record["started_ms"]):
            from mlflow.entities import RunTag

            client.log_batch(previous.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if record.get("resume"):
                client.update_run(previous.info.run_id, status="RUNNING")
            run_id = previous.info.run_id
        else:
            run_id = client.create_run(experiment, start_time=record["started_ms"], run_name=record["run_name"],
                                       tags=tags).info.run_id
        self.state.update(mlflow_run_id=str(run_id), experiment_id=str(experiment))

    def _experiment(self, record: dict[str, Any]) -> str:
        from mlflow.exceptions import MlflowException

        client = self.client
        for _ in range(2):
            experiment = client.get_experiment_by_name(record["experiment"])
            if experiment is not None:
                tag_experiment_kind(client, experiment)  # stores made before the tag existed
                return str(experiment.experiment_id)
            try:
                return str(client.create_experiment(record["experiment"], artifact_location=record.get("artifact_location"),
                                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))
            except MlflowException as exc:  # created meanwhile by another use case on the same store
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        raise StoreUnreachable(f"experiment {record['experiment']!r} can neither be found nor created")

    def _find(self, experiment_id: str, run_tag: str) -> Any:
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`modelcycle.run_id` = '{run_tag}'", max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0] if found else None

    def _op_params(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in record["params"].items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def _op_metrics(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), record["ts"], record.get("step") or 0) for k, v in record["metrics"].items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def _op_tags(self, record: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in record["tags"].items()])

    def _op_dataset(self, record: dict[str, Any]) -> None:
        import hashlib

        from mlflow.entities import Dataset, DatasetInput, InputTag

        checksums = record["checksums"]
        if any(i.dataset.name == record["name"] for i in self.client.get_run(self.run_id).inputs.dataset_inputs):
            return
        digest = hashlib.md5("".join(sorted(checksums.values())).encode()).hexdigest()[:16]
        dataset = Dataset(
            name=record["name"], digest=digest, source_type="local", source=json.dumps({"uri": record["source"]}),
            schema=json.dumps({"files": checksums}), profile=json.dumps(record["records"]),
        )
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])

    def _op_missing_epochs(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        metrics = []
        for entry in record["history"]:
            entry = dict(entry)
            step = int(entry.pop("epoch"))
            for key, value in entry.items():
                if step not in {m.step for m in self.client.get_metric_history(self.run_id, key)}:
                    metrics.append(Metric(key, float(value), record["ts"], step))
        for start in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 500])

    def _op_text(self, record: dict[str, Any]) -> None:
        self.client.log_text(self.run_id, record["text"], record["artifact_file"])

    def _op_artifact(self, record: dict[str, Any]) -> None:
        self.client.log_artifact(self.run_id, record["path"], record.get("artifact_path"))

    def _op_end(self, record: dict[str, Any]) -> None:
        self.client.set_terminated(self.run_id, record["status"], end_time=record["ended_ms"])
        self.state["ended"] = True

    def _op_log_model(self, record: dict[str, Any]) -> None:
        from modelcycle.core.artifacts import read_manifest
        from modelcycle.core.mlflow_model import log_trained_model

        name, model_dir = record["registered_name"], Path(record["model_dir"])
        run_tag = read_manifest(model_dir).run_id
        try:
            versions = self.client.search_model_versions(f"name = '{name}' AND tag.`modelcycle.run_id` = '{run_tag}'")
        except Exception:  # noqa: BLE001 - no registered model yet
            versions = []
        if any(v.run_id == self.run_id for v in versions):
            return  # logged before a crash: a replay does not log it twice
        logged = log_trained_model(self.client, self.uri, self.run_id, model_dir, name)
        self.state["logged_model"] = logged

    def _op_close(self, record: dict[str, Any]) -> None:
        self.state["closed"] = True

    def end_killed(self, last_ts: int) -> None:
        """The training process died without ending its run: end it ``KILLED`` at its last record."""
        if self.state.get("mlflow_run_id") and not self.state.get("ended"):
            self.client.set_terminated(self.run_id, "KILLED", end_time=last_ts)
            self.state["ended"] = True
            _say(f"{self.spool.name}: the training process {self.opening.get('trainer_pid')} is gone; "
                 f"MLflow run {self.run_id} ended KILLED")

    def reachable(self) -> bool:
        try:
            self.client.search_experiments(max_results=1)
        except Exception:  # noqa: BLE001
            return False
        return True


def apply_spool(spool: Path) -> bool:
    """Apply ``spool`` from its saved offset, following it until it is complete; remove it then.

    Returns ``False`` (the spool kept, the error in its state) when the store is unreachable."""
    state = read_state(spool)
    state.pop("error", None)
    with spool.open("rb") as handle:
        first = handle.readline()
        for _ in range(50):  # the opening record is written in one piece: wait a moment for it
            if first.endswith(b"\n"):
                break
            time.sleep(POLL_S)
            handle.seek(0)
            first = handle.readline()
        else:
            return _failed(spool, state, ValueError(f"{spool} has no complete opening record"))
        opening = json.loads(first)
        state["uri"] = opening.get("uri")
        run = _Run(spool, opening, state)
        offset = int(state.get("applied", 0))
        handle.seek(offset)
        last_ts = int(state.get("last_ts", opening.get("ts", 0)))
        trainer = opening.get("trainer_pid")
        while not state.get("closed"):
            line = handle.readline()
            if not line.endswith(b"\n"):
                handle.seek(offset)
                if pid_alive(trainer):
                    time.sleep(POLL_S)
                    continue
                line = handle.readline()  # what the trainer wrote just before it died
                if not line.endswith(b"\n"):
                    try:
                        run.end_killed(last_ts)
                    except Exception as exc:  # noqa: BLE001
                        return _failed(spool, state, exc)
                    break
            record = json.loads(line)
            try:
                run.apply(record)
            except Exception as exc:  # noqa: BLE001 - an unreachable store keeps the spool; a bad record is skipped
                if record["op"] == "open" or not run.reachable():
                    return _failed(spool, state, exc)
                _say(f"{spool.name}: record {record['op']!r} not applied: {type(exc).__name__}: {exc}")
                state.setdefault("warnings", []).append(f"{record['op']}: {exc}")
            offset, last_ts = handle.tell(), int(record.get("ts", last_ts))
            state.update(applied=offset, last_ts=last_ts)
            write_state(spool, state)
    _say(f"{spool.name}: applied to MLflow run {state.get('mlflow_run_id')} at {state.get('uri')}")
    spool.unlink(missing_ok=True)
    state_path(spool).unlink(missing_ok=True)
    return True


def _failed(spool: Path, state: dict[str, Any], exc: BaseException) -> bool:
    state["error"] = f"{type(exc).__name__}: {exc}"
    write_state(spool, state)
    _say(f"{spool.name}: the MLflow store at {state.get('uri')} failed; the spool is kept for a replay: {state['error']}")
    if sys.exc_info()[0] is not None:
        traceback.print_exc(file=sys.stdout)
    return False


def _yield_to_training() -> None:
    """Run only on cores training leaves idle: Linux's ``SCHED_IDLE`` class (a waking training
    thread preempts it at once, so the trainer's parallel regions never wait on this process),
    else the lowest nice. Even a nice-19 task measurably slows a 2-thread forward pass that
    shares its cores; one in ``SCHED_IDLE`` does not."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):  # not Linux
        pass
    try:
        os.nice(19)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Apply every spool of the directory ``argv[0]``, oldest first; 1 if one stays unapplied."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m modelcycle.core.tracking_writer <spool directory>", file=sys.stderr)
        return 2
    directory = Path(args[0])
    _yield_to_training()
    route_library_logs(directory.parent)  # MLflow's own notes go to the use case's libraries.log
    failed: set[Path] = set()
    with writer_lock(directory):
        while True:
            todo = [spool for spool in pending_spools(directory) if spool not in failed]
            if not todo:
                return 1 if failed else 0
            try:
                if not apply_spool(todo[0]):
                    failed.add(todo[0])
            except FileNotFoundError:
                continue  # applied meanwhile
            except Exception:  # noqa: BLE001 - a damaged spool must not stop the others
                traceback.print_exc(file=sys.stdout)
                failed.add(todo[0])


if __name__ == "__main__":
    sys.exit(main())
