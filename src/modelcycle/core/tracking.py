"""Experiment tracking on MLflow: every ``train`` is an MLflow run.

The store is embedded (``sqlite:///<use case>/.modelcycle/mlflow.db``) unless the config names
any tracking URI. The run is created when training starts (status ``RUNNING``) and ends
``FINISHED``, ``FAILED`` or ``KILLED`` (interrupted), so durations are real and a killed attempt is
visible; a resumed run continues the same MLflow run (found by its ``modelcycle.run_id`` tag),
and an interrupted run that is abandoned (``train --restart``) is ended ``KILLED``.

Tracking must not slow training down: importing MLflow and opening its store costs seconds of
CPU, logging the model more. The training process never imports MLflow: :class:`RunTracker`
appends timestamped records to a spool under ``.modelcycle/tracking/`` and starts a detached
writer process that creates the run at once and applies them (:mod:`.tracking_spool`,
:mod:`.tracking_writer`); ``train`` does not wait for it. Commands that read the store call
:func:`wait_for_pending_writes` first. ``mlflow ui --backend-store-uri <uri>`` shows the runs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from modelcycle.core.library_logs import import_quietly
from modelcycle.core.markers import hookimpl

__all__ = [
    "RunTracker", "default_tracking_uri", "git_commit", "flatten", "mlflow_client", "tag_experiment_kind",
    "EXPERIMENT_KIND_TAG", "EXPERIMENT_KIND", "wait_for_pending_writes", "SPOOL_DIR",
]

log = logging.getLogger(__name__)


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


#: Spool directories this process started writers for (what :func:`wait_for_pending_writes` waits
#: for when given no directory).
_STARTED: set[Path] = set()
_STARTED_LOCK = threading.Lock()


def wait_for_pending_writes(work_dir: Path | None = None, timeout: float = 300.0) -> None:
    """Block (at most ``timeout`` seconds) until the tracking records spooled so far are in the
    MLflow store: those of the use case whose ``.modelcycle`` directory is ``work_dir`` (written by
    any process), or with no ``work_dir`` those of the runs this process tracked. Every command
    that reads the store calls it first. A spool left without a writer (it died, or the store was
    unreachable) is replayed by a new writer; what still cannot be written is reported as a
    warning naming the store, the writer's log and the spool, which is kept."""
    from modelcycle.core.tracking_spool import wait_for_spools

    if work_dir is not None:
        directories = [Path(work_dir) / SPOOL_DIR]
    else:
        with _STARTED_LOCK:
            directories = sorted(_STARTED)
    deadline = time.monotonic() + timeout
    for directory in directories:
        for warning in wait_for_spools(directory, max(0.0, deadline - time.monotonic())):
            log.warning(warning)
            print(f"warning: {warning}", file=sys.stderr)


#: the spool directory of a use case, under its ``.modelcycle`` directory
SPOOL_DIR = "tracking"
#: How long the end of training waits for the writer to create the MLflow run (its id is an output).
_RUN_ID_WAIT_S = 120.0


class RunTracker:
    """One MLflow run, written by a detached writer process fed by a spool
    (:mod:`.tracking_spool`, :mod:`.tracking_writer`): this process never imports MLflow.

    Every call appends a record stamped with the time it was made (metrics keep their time, the
    run starts at ``started_ms`` and ends when :meth:`finish` is called, however late the writer
    applies them). A process that dies without :meth:`finish` leaves its run to be ended
    ``KILLED`` by the writer.

    Args:
        uri: the MLflow tracking URI.
        experiment: experiment name (the use case's name).
        run_name: the run's display name.
        tags: tags set when the run is created.
        artifact_location: the experiment's artifact root when the writer creates it.
        resume: continue the MLflow run tagged with this run's ``modelcycle.run_id`` when one exists.
        abandoned: modelcycle run ids whose MLflow runs, if still ``RUNNING``, end ``KILLED``.
        started_ms: when training started (epoch ms; default now).
        spool_dir: where the spool goes; default ``tracking/`` beside a SQLite store's file.
    """

    def __init__(
        self, uri: str, experiment: str, run_name: str, tags: dict[str, str], artifact_location: str | None = None,
        resume: bool = False, abandoned: tuple[str, ...] = (), started_ms: int | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        from modelcycle.core.tracking_spool import SpoolFile

        self.uri = uri
        self.resume = resume
        self.abandoned = tuple(abandoned)
        self.started_ms = started_ms or int(time.time() * 1000)
        self.artifact_location = artifact_location
        self.experiment = experiment
        self.run_name = run_name
        self.tags = tags
        self.mlflow_run_id: str | None = None
        self.experiment_id: str | None = None
        self.error: str | None = None
        self.epochs_logged = 0
        if spool_dir is None:
            if not uri.startswith("sqlite:///"):
                raise ValueError(f"RunTracker needs a spool_dir for the tracking URI {uri!r} (only a SQLite store "
                                 "has a default: tracking/ beside its file)")
            spool_dir = Path(uri[len("sqlite:///"):]).parent / SPOOL_DIR
        key = f"{tags.get('modelcycle.run_id') or 'run'}.{self.started_ms}"
        self.spool = SpoolFile(Path(spool_dir), key)
        self._after_end: list[tuple[str, dict[str, Any]]] = []
        self._writer: Any = None
        self._finished = False

    # -- the writer ------------------------------------------------------------------------
    def start(self) -> RunTracker:
        """Spool the run's opening record and start the writer (it creates the run right away)."""
        if self._writer is None:
            self.spool.append(
                "open", uri=self.uri, experiment=self.experiment, run_name=self.run_name, tags=self.tags,
                artifact_location=self.artifact_location, resume=self.resume, abandoned=list(self.abandoned),
                started_ms=self.started_ms, trainer_pid=os.getpid(),
            )
            from modelcycle.core.tracking_spool import start_writer

            self._writer = start_writer(self.spool.directory)
            with _STARTED_LOCK:
                _STARTED.add(self.spool.directory)
        return self

    def _record(self, op: str, **fields: Any) -> None:
        if self._finished:
            raise RuntimeError(f"the tracked run {self.run_name} has ended: nothing more can be recorded")
        self.start()
        self.spool.append(op, **fields)

    def wait_until_ready(self, timeout: float = 120.0) -> str:
        """Block until the writer has created the run; return its MLflow id (needed for autolog).

        Raises:
            TimeoutError: the store did not answer in ``timeout`` seconds.
            RuntimeError: the writer could not create the run (the store is unreachable).
        """
        self.start()
        if self._poll_run_id(timeout) is None:
            if self.error is None:
                raise TimeoutError(f"the MLflow store at {self.uri} did not answer in {timeout:.0f} s")
            raise RuntimeError(f"could not create an MLflow run at {self.uri}: {self.error}")
        return str(self.mlflow_run_id)

    def _poll_run_id(self, timeout: float) -> str | None:
        """The MLflow run id once the writer wrote it (``None``: the writer failed or timed out)."""
        from modelcycle.core.tracking_spool import LOG_NAME, read_state, writer_running

        deadline = time.monotonic() + timeout
        while self.mlflow_run_id is None:
            state = read_state(self.spool.path)
            if state.get("mlflow_run_id"):
                self.mlflow_run_id, self.experiment_id = state["mlflow_run_id"], state.get("experiment_id")
                break
            stopped = self._writer is not None and self._writer.poll() is not None
            if state.get("error") or (stopped and not writer_running(self.spool.directory)) \
                    or time.monotonic() > deadline:
                self.error = state.get("error") or f"no answer in {timeout:.0f} s"
                self.error += f" (writer log: {self.spool.directory / LOG_NAME})"
                return None
            time.sleep(0.05)
        return self.mlflow_run_id

    # -- what training code calls ----------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        self._record("params", params={k: v[:6000] for k, v in flatten(params).items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._record("metrics", metrics={k: float(v) for k, v in metrics.items()}, step=step or 0)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._record("tags", tags=flatten(tags))

    def log_dataset(self, name: str, source: str, checksums: dict[str, str], records: dict[str, int]) -> None:
        """Record the dataset as a run input (name, source, digest over the file checksums)."""
        self._record("dataset", name=name, source=source, checksums=checksums, records=records)

    def log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """Log the per-epoch metrics of ``history`` whose step the run does not hold yet (a
        resumed run: epochs the killed attempt trained but had not written)."""
        self._record("missing_epochs", history=[dict(entry) for entry in history])

    def log_text(self, text: str, artifact_file: str) -> None:
        self._record("text", text=text, artifact_file=artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._record("artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def log_model_after_end(self, model_dir: Path, registered_name: str) -> None:
        """Have the writer log ``model_dir`` as an MLflow model and register it as a version of
        ``registered_name`` once the run has ended (:func:`.mlflow_model.log_trained_model`)."""
        self._after_end.append(("log_model", {"model_dir": str(Path(model_dir).resolve()),
                                              "registered_name": registered_name}))

    def finish(self, status: str = "FINISHED", timeout: float = _RUN_ID_WAIT_S) -> str | None:
        """End the run with ``status`` now (the writer applies it later); returns the MLflow run
        id, waiting (at most ``timeout`` s) for the writer to have created the run — not at all
        unless training took less than MLflow's start-up, and then the run ends after the wait,
        when the stage the user waited for ends. ``None`` when the writer could not create the
        run (the spool stays for a later replay)."""
        self.start()
        run_id = self._poll_run_id(timeout)  # before the end record: a finished spool is removed
        if run_id is None:
            log.warning("tracking: no MLflow run at %s yet: %s", self.uri, self.error)
        self._record("end", status=status, ended_ms=int(time.time() * 1000))
        for op, fields in self._after_end:
            self._record(op, **fields)
        self._record("close")
        self._finished = True
        self.spool.close()
        return run_id

    # -- observer hooks --------------------------------------------------------------------
    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], context: Any) -> None:
        """Per-epoch metrics (both capture modes), step = epoch, recorded when the epoch ended."""
        if getattr(context, "rank", 0) == 0:
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
        spool_dir=Path(work_dir) / SPOOL_DIR,
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

