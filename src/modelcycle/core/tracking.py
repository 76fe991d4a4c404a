"""Experiment tracking on MLflow: every ``train`` is an MLflow run.

The store is embedded (``sqlite:///<use case>/.modelcycle/mlflow.db``) unless the config names
any tracking URI. The run is created when training starts (status ``RUNNING``) and ends
``FINISHED``, ``FAILED`` or ``KILLED`` (interrupted), so durations are real and a killed attempt is
visible; a resumed run continues the same MLflow run (found by its ``modelcycle.run_id`` tag),
and an interrupted run that is abandoned (``train --restart``) is ended ``KILLED``.

Tracking must not slow training down: importing MLflow and opening its store costs seconds of
CPU. :class:`RunTracker` creates the run and writes from a background thread started with the
stage (the run's start time is the stage's, however late the store answers); training only
queues records. ``mlflow ui --backend-store-uri <uri>`` shows the runs.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelcycle.core.library_logs import import_quietly
from modelcycle.core.markers import hookimpl

__all__ = [
    "RunTracker", "default_tracking_uri", "git_commit", "flatten", "mlflow_client", "tag_experiment_kind",
    "EXPERIMENT_KIND_TAG", "EXPERIMENT_KIND", "wait_for_pending_writes",
]

log = logging.getLogger(__name__)
_STOP = object()


#: MLflow 3's experiment-kind tag, and the value (model development) that opens MLflow's UI on the
#: runs table rather than on the GenAI traces overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tag_experiment_kind(client: Any, experiment: Any) -> None:
    """Tag ``experiment`` (an MLflow ``Experiment``) as model development unless it names a kind."""
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def default_tracking_uri(work_dir: Path) -> str:
    """The embedded store of a use case."""
    return f"sqlite:///{Path(work_dir).resolve() / 'mlflow.db'}"


def git_commit(directory: Path) -> str | None:
    """The commit of the git checkout holding ``directory`` (``None`` outside a checkout)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` → ``{"a.b": "1"}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif value is not None:
            flat[name] = str(value)
    return flat


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``; MLflow is imported quietly (see :mod:`.library_logs`).

    A SQLite store that does not exist yet is created complete or not at all: MLflow's schema
    migrations run on a private file that is then linked into place, so a process killed while
    migrating (they take seconds) never leaves a half-migrated store behind."""
    tracking = import_quietly("mlflow.tracking")
    if uri.startswith("sqlite:///"):
        _create_sqlite_store(Path(uri[len("sqlite:///"):]), tracking.MlflowClient)
    return tracking.MlflowClient(tracking_uri=uri)


def _create_sqlite_store(path: Path, client_class: Any) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    private = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.creating")
    try:
        client_class(tracking_uri=f"sqlite:///{private}").search_experiments(max_results=1)  # runs the migrations
        try:
            os.link(private, path)  # atomic, and never replaces a store another process linked first
        except FileExistsError:
            pass
    finally:
        private.unlink(missing_ok=True)


#: Trackers whose run has ended but whose writer still works (:meth:`RunTracker.submit_after_end`).
_PENDING: list[RunTracker] = []
_PENDING_LOCK = threading.Lock()


def wait_for_pending_writes(timeout: float = 300.0) -> None:
    """Block until every ended run's background writes (the logged model, its registration)
    are done: ``train`` calls it once its stage is recorded, readers of the MLflow store call it
    (a process must not exit before: its writer thread is a daemon)."""
    deadline = time.monotonic() + timeout
    while True:
        with _PENDING_LOCK:
            if not _PENDING:
                return
            tracker = _PENDING.pop(0)
        tracker._thread.join(max(0.0, deadline - time.monotonic()))
        if tracker._thread.is_alive():
            log.warning("tracking: the background writes to %s did not finish in %.0f s", tracker.uri, timeout)
        elif tracker.error is not None:
            log.warning("tracking incomplete for %s: %s", tracker.uri, tracker.error)

#: How long the end of the first epoch waits for the MLflow run to be created.
_FIRST_EPOCH_WAIT_S = 120.0


class RunTracker:
    """One MLflow run, written from a background thread.

    Args:
        uri: the MLflow tracking URI.
        experiment: experiment name (the use case's name).
        run_name: the run's display name.
        tags: tags set when the run is created.
    """

    def __init__(
        self, uri: str, experiment: str, run_name: str, tags: dict[str, str], artifact_location: str | None = None,
        resume: bool = False, abandoned: tuple[str, ...] = (), started_ms: int | None = None,
    ) -> None:
        self.uri = uri
        #: continue the MLflow run tagged with this run's ``modelcycle.run_id`` when one exists
        self.resume = resume
        #: modelcycle run ids whose MLflow runs, if still ``RUNNING``, end ``KILLED``
        self.abandoned = tuple(abandoned)
        #: when training started: the run's start time even if the store answers late
        self.started_ms = started_ms or int(time.time() * 1000)
        self.artifact_location = artifact_location
        self.experiment = experiment
        self.run_name = run_name
        self.tags = tags
        self.mlflow_run_id: str | None = None
        self.experiment_id: str | None = None
        self.error: BaseException | None = None
        self.epochs_logged = 0
        self._ready = threading.Event()
        self._after_end: list[Callable[[Any, str], None]] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="modelcycle-tracking", daemon=True)

    # -- background thread -----------------------------------------------------------------
    def start(self) -> RunTracker:
        """Create the run now, on the background thread (needed before autolog)."""
        if not self._thread.is_alive() and not self._ready.is_set():
            self._thread.start()
        return self

    def _find_run(self, client: Any, experiment_id: str, run_id: str) -> Any:
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`modelcycle.run_id` = '{run_id}'", max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0] if found else None

    def _open_run(self, client: Any, experiment_id: str) -> str:
        """Create the run, or continue the interrupted one when resuming; end abandoned ones."""
        for abandoned in self.abandoned:
            old = self._find_run(client, experiment_id, abandoned)
            if old is not None and old.info.status == "RUNNING":
                client.set_terminated(old.info.run_id, "KILLED")
        run_id = self.tags.get("modelcycle.run_id", "")
        previous = self._find_run(client, experiment_id, run_id) if self.resume and run_id else None
        if previous is None:
            run = client.create_run(experiment_id, start_time=self.started_ms, run_name=self.run_name, tags=self.tags)
            return str(run.info.run_id)
        from mlflow.entities import RunTag

        client.log_batch(previous.info.run_id, tags=[RunTag(k, v) for k, v in self.tags.items()])
        client.update_run(previous.info.run_id, status="RUNNING")
        return str(previous.info.run_id)

    def _work(self) -> None:
        try:
            client = mlflow_client(self.uri)
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is not None:
                tag_experiment_kind(client, experiment)  # stores made before the tag existed
            experiment_id = (
                experiment.experiment_id
                if experiment
                else client.create_experiment(self.experiment, artifact_location=self.artifact_location,
                                              tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            )
            self.experiment_id = experiment_id
            self.mlflow_run_id = self._open_run(client, experiment_id)
        except BaseException as exc:  # noqa: BLE001 - reported by finish(), never kills training
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                item(client, self.mlflow_run_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("tracking: %s", exc)
                self.error = self.error or exc

    def _submit(self, action: Callable[[Any, str], None]) -> None:
        self._queue.put(action)

    # -- what training code calls ----------------------------------------------------------
    def wait_until_ready(self, timeout: float = 120.0) -> str:
        """Block until the run exists; return its MLflow id (needed for autolog)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the MLflow store at {self.uri} did not answer in {timeout:.0f} s")
        if self.error is not None or self.mlflow_run_id is None:
            raise RuntimeError(f"could not create an MLflow run at {self.uri}: {self.error}")
        return self.mlflow_run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from_flat = flatten(params)

        def action(client: Any, run_id: str) -> None:
            from mlflow.entities import Param

            items = [Param(k, v[:6000]) for k, v in from_flat.items()]
            for start in range(0, len(items), 100):
                client.log_batch(run_id, params=items[start : start + 100])

        self._submit(action)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)
        values = {k: float(v) for k, v in metrics.items()}

        def action(client: Any, run_id: str) -> None:
            from mlflow.entities import Metric

            client.log_batch(run_id, metrics=[Metric(k, v, stamp, step or 0) for k, v in values.items()])

        self._submit(action)

    def set_tags(self, tags: dict[str, Any]) -> None:
        flat = flatten(tags)

        def action(client: Any, run_id: str) -> None:
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in flat.items()])

        self._submit(action)

    def log_dataset(self, name: str, source: str, checksums: dict[str, str], records: dict[str, int]) -> None:
        """Record the dataset as a run input (name, source, digest over the file checksums)."""

        def action(client: Any, run_id: str) -> None:
            import hashlib
            import json

            from mlflow.entities import Dataset, DatasetInput, InputTag

            digest = hashlib.md5("".join(sorted(checksums.values())).encode()).hexdigest()[:16]
            dataset = Dataset(
                name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                schema=json.dumps({"files": checksums}), profile=json.dumps(records),
            )
            client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])

        self._submit(action)

    def log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """Log the per-epoch metrics of ``history`` whose step the run does not hold yet (a
        resumed run: epochs the killed attempt trained but had not written)."""
        epochs = [dict(entry) for entry in history]

        def action(client: Any, run_id: str) -> None:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            metrics = []
            for entry in epochs:
                step = int(entry.pop("epoch"))
                for key, value in entry.items():
                    if step not in {m.step for m in client.get_metric_history(run_id, key)}:
                        metrics.append(Metric(key, float(value), stamp, step))
            for start in range(0, len(metrics), 500):
                client.log_batch(run_id, metrics=metrics[start : start + 500])

        self._submit(action)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._submit(lambda client, run_id: client.log_text(run_id, text, artifact_file))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._submit(lambda client, run_id: client.log_artifact(run_id, str(path), artifact_path))

    def submit(self, action: Callable[[Any, str], None]) -> None:
        """Run ``action(client, mlflow_run_id)`` on the writer thread, after what is queued and
        before the run ends (an exception is reported as incomplete tracking)."""
        self._submit(action)

    def submit_after_end(self, action: Callable[[Any, str], None]) -> None:
        """Run ``action(client, mlflow_run_id)`` on the writer thread once the run has ended:
        :meth:`finish` does not wait for it, :func:`wait_for_pending_writes` does."""
        self._after_end.append(action)

    def finish(self, status: str = "FINISHED", timeout: float = 120.0) -> str | None:
        """Write every queued record, end the run with ``status``; returns the MLflow run id.

        The run ends when ``finish`` is called, however long the queued writes take. With actions
        queued by :meth:`submit_after_end`, ``finish`` returns once the run exists and the writes
        go on in the background (:func:`wait_for_pending_writes` waits for them and reports errors)."""
        ended_ms = int(time.time() * 1000)

        self._submit(lambda client, run_id: client.set_terminated(run_id, status, end_time=ended_ms))
        for action in self._after_end:
            self._submit(action)
        self._queue.put(_STOP)
        self.start()
        if self._after_end:  # the queued writes go on after the stage: train() waits for them at its end
            self._ready.wait(timeout)
            with _PENDING_LOCK:
                _PENDING.append(self)
            return self.mlflow_run_id
        self._thread.join(timeout)
        if self.error is not None:
            log.warning("tracking incomplete for %s: %s", self.uri, self.error)
        return self.mlflow_run_id

    # -- observer hooks --------------------------------------------------------------------
    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], context: Any) -> None:
        """Per-epoch metrics (both capture modes), step = epoch.

        The first epoch's end also waits (bounded) for the MLflow run to exist: MLflow's set-up
        overlaps data loading and epoch 1, and from epoch 2 on a killed attempt is always
        visible in MLflow. An unreachable store only means an untracked run."""
        if getattr(context, "rank", 0) == 0:
            if self.epochs_logged == 0:
                self._ready.wait(_FIRST_EPOCH_WAIT_S)
            self.epochs_logged += 1
            self.log_metrics(metrics, step=epoch)



def start_tracker(
    config: Any, work_dir: Path, directory: Path, run_id: str, platform: str,
    resume: bool = False, abandoned: tuple[str, ...] = (), attempt: int = 1, started_ms: int | None = None,
) -> RunTracker | None:
    """Start tracking a training run now (``None`` when ``tracking.enabled`` is false): the MLflow
    run exists, ``RUNNING``, from the start. ``resume`` continues the run's MLflow run (tagged
    ``modelcycle.attempts``); ``abandoned`` run ids end ``KILLED`` if still ``RUNNING``;
    ``started_ms`` (epoch milliseconds) is the run's start when training began before the tracker."""
    if not config.tracking.enabled:
        return None
    wait_for_pending_writes()  # the previous run's model logging swaps MLflow's process-wide URI
    tags = {
        "modelcycle.run_id": run_id,
        "modelcycle.use_case": config.name,
        "modelcycle.framework": config.framework,
        "modelcycle.platform": platform,
        "modelcycle.capture": config.capture,
        "mlflow.source.name": "modelcycle train",
        "job_name": f"{config.name}-{run_id[:8]}",
        "modelcycle.attempts": str(attempt),
    }
    commit = git_commit(directory)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tracker = RunTracker(
        uri=config.tracking.uri or default_tracking_uri(work_dir),
        experiment=config.tracking.experiment or config.name,
        run_name=tags["job_name"],
        tags=tags,
        # artifacts beside the embedded store, never in whatever directory the process runs in
        artifact_location=None if config.tracking.uri else (Path(work_dir).resolve() / "mlartifacts").as_uri(),
        resume=resume,
        abandoned=abandoned,
        started_ms=started_ms,
    )
    tracker.log_params(
        {
            **config.hyperparameters.model_dump(),
            "model": config.model,
            "data": config.data.model_dump(),
            "framework": config.framework,
        }
    )
    return tracker.start()


def record_training(tracker: RunTracker, result: Any) -> None:
    """Queue what a finished run produced: final metrics, facts, dataset input, summary, artifacts."""
    from modelcycle.core.artifacts import read_manifest

    if tracker.resume:  # the interrupted attempt may not have written its epochs
        tracker.log_metrics({"duration_s": result.duration_s})
        tracker.log_missing_epochs(result.history)
    elif tracker.epochs_logged:  # per-epoch metrics were logged as training went
        tracker.log_metrics({"duration_s": result.duration_s})
    else:  # trained elsewhere (a remote job): log the final metrics once
        tracker.log_metrics({**result.metrics, "duration_s": result.duration_s}, step=len(result.history))
    facts = result.facts or {}
    if facts.get("params"):
        tracker.log_params(facts["params"])
    if facts.get("metrics"):
        tracker.log_metrics(facts["metrics"])
    if facts.get("tags"):
        tracker.set_tags(facts["tags"])
    if result.summary:
        tracker.log_text(result.summary, "model_summary.txt")
    if result.model_dir is not None and Path(result.model_dir).exists():
        manifest = read_manifest(Path(result.model_dir))
        tracker.log_params({"preprocessing": manifest.preprocessing.model_dump()})
        tracker.log_dataset(
            manifest.dataset.name,
            source=str(result.model_dir),
            checksums=manifest.dataset.checksums,
            records={"train": manifest.dataset.train_records, "test": manifest.dataset.test_records},
        )
        tracker.log_artifact(Path(result.model_dir) / "modelcycle.json", "model")
    if result.archive is not None and Path(result.archive).exists():
        tracker.log_artifact(Path(result.archive), "model")

