"""``UseCase``: the lifecycle of one model, the same whatever its framework or platform.

Stages declare the stages they need; each is idempotent (a stage already done, whose result
still holds, is skipped unless forced) and resumable (a stage interrupted by a crash is run
again). Every transition is persisted atomically under the use case's lock.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcycle.core.artifacts import verify_model
from modelcycle.core.config import UseCaseConfig, load_config, validate_section
from modelcycle.core.errors import ModelcycleError, StageError
from modelcycle.core.library_logs import route_library_logs
from modelcycle.core.plugin_types import SERVING_STATUSES
from modelcycle.core.registry import PluginRegistry
from modelcycle.core.stages import DEFAULT_UNTIL, PIPELINE, STAGES, Stage
from modelcycle.core.state import State, StateDamagedError, StateStore, utcnow
from modelcycle.core.tracking import RunTracker, record_training, start_tracker

__all__ = ["UseCase", "Stage", "PIPELINE", "DEFAULT_UNTIL", "ScoreResult"]

WORK_DIR = ".modelcycle"


@dataclass
class ScoreResult:
    """What ``score`` got back: predicted labels, probabilities, true labels, timing."""

    predictions: list[int]
    probabilities: list[list[float]]
    labels: list[int]
    response_time_ms: float
    scoring_id: str | None
    response: dict[str, Any]


@contextmanager
def _autolog_run(tracker: RunTracker, capture: str) -> Iterator[None]:
    """With ``capture: autolog``, make the tracked run MLflow's active run in this thread, so the
    framework plugin's MLflow autolog writes into it."""
    if capture != "autolog":
        yield
        return
    try:
        run_id = tracker.wait_until_ready()  # the writer process creates the run
    except (TimeoutError, RuntimeError) as exc:  # the store is unreachable: train untracked
        print(f"warning: autolog is off for this run: {exc}", file=sys.stderr)
        yield
        return
    import mlflow

    from mlflow.tracking import fluent

    # MLflow's fluent API is process-global (tracking URI, active experiment, and its
    # MLFLOW_EXPERIMENT_ID variable): point it at this run, then put all of it back
    previous = (mlflow.get_tracking_uri(), fluent._active_experiment_id, os.environ.get("MLFLOW_EXPERIMENT_ID"))
    mlflow.set_tracking_uri(tracker.uri)
    mlflow.set_experiment(experiment_id=tracker.experiment_id)
    try:
        with mlflow.start_run(run_id=run_id):
            yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        fluent._active_experiment_id = previous[1]
        if previous[2] is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = previous[2]


def _same_endpoint(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    """The platform replaced ``previous`` in place (same name and process, e.g. a SageMaker
    endpoint recreated under its name), so there is nothing left to stop."""
    return all(previous.get(key) == new.get(key) for key in ("platform", "name", "pid"))


class UseCase:
    """One use case directory (``modelcycle.yaml`` plus ``.modelcycle/`` state and artifacts).

    Args:
        directory: the use case directory.
        overrides: ``{"section.key": value}`` applied over file and environment.
        plugins: extra in-process plugin objects (observers, hook overrides).
        lock_timeout: seconds to wait for another process working on this use case.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] = ".",
        overrides: Mapping[str, Any] | None = None,
        plugins: Iterable[Any] = (),
        lock_timeout: float | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.overrides: dict[str, Any] = dict(overrides or {})
        self.config: UseCaseConfig = load_config(self.directory, self.overrides)
        self.work_dir = self.directory / WORK_DIR
        route_library_logs(self.work_dir)
        self.store = StateStore(self.work_dir)
        self.lock_timeout = lock_timeout
        self._extra_plugins = list(plugins)
        self._registry: PluginRegistry | None = None
        self._model_config: Any = None

    # -- plugins ---------------------------------------------------------------------------
    @property
    def registry(self) -> PluginRegistry:
        """The plugin registry: platforms load on demand, the framework via ``model_config``."""
        if self._registry is None:
            registry = PluginRegistry(blocked=tuple(self.config.disable_plugins))
            for plugin in self._extra_plugins:
                registry.register(plugin)
            self._registry = registry
        return self._registry

    @property
    def model_config(self) -> Any:
        """Load the framework plugin and return ``model:`` validated by its config class."""
        if self.registry.framework is None:
            self.registry.load_framework(self.config.framework)
            config_class = self.registry.pm.hook.model_config_class()
            if config_class is not None:
                self._model_config = validate_section(
                    config_class, self.config.model, "model", str(self.directory / "modelcycle.yaml")
                )
        return self._model_config

    def _platform(self, role: str) -> str:
        name = self.config.training.platform if role == "training" else self.config.serving.platform
        self.registry.load_platform(name, role)
        return name

    # -- stage machinery -------------------------------------------------------------------
    def state(self) -> State:
        return self.store.read()

    def _run_stage(self, name: str, action: Callable[[State], dict[str, Any]], force: bool, still_valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        stage = STAGES[name]
        with self.store.lock(f"pid {os.getpid()} running '{name}'", self.lock_timeout):
            state = self.store.read()
            for needed in stage.requires:
                if not state.done(needed):
                    raise StageError(name, f"needs '{needed}' first: run 'modelcycle {needed}' (or 'modelcycle run --until {name}')")
            record = state.stage(name)
            if record.status == "done" and not force and (still_valid is None or still_valid(record.outputs)):
                return record.outputs
            if record.interrupted():
                state.record(name, "interrupted", previous_pid=record.pid)
            registry = self.registry
            record.status, record.started_at, record.finished_at = "running", utcnow(), None
            record.pid, record.error = os.getpid(), None
            state.record(name, "start")
            self.store.write(state)
            registry.hook.on_stage_start(stage=name, use_case=self)
            try:
                outputs = action(state)
            except BaseException as exc:
                record.status, record.error, record.finished_at = "failed", f"{type(exc).__name__}: {exc}", utcnow()
                state.record(name, "failed", error=record.error)
                self.store.write(state)
                registry.hook.on_stage_error(stage=name, use_case=self, error=exc)
                raise
            record.status, record.outputs, record.finished_at = "done", outputs, utcnow()
            state.record(name, "done")
            self.store.write(state)
            registry.hook.on_stage_end(stage=name, use_case=self, outputs=outputs)
            return outputs

    # -- stages ----------------------------------------------------------------------------
    def train(self, force: bool = False, restart: bool = False) -> dict[str, Any]:
        """Train and package the model on the training platform; returns the run's outputs.

        A run whose process died (or failed) is resumed from its last complete epoch, as the same
        run and MLflow run, when the training configuration is unchanged; ``restart`` starts a new
        run from epoch 1 instead (and trains even when already trained).
        """
        started_ms = int(time.time() * 1000)  # the MLflow run's start: loading the framework is training too

        def action(state: State) -> dict[str, Any]:
            from contextlib import nullcontext

            from modelcycle.core import attempts
            from modelcycle.core.checkpoints import CHECKPOINT_DIR, supports_checkpoints
            from modelcycle.core.mlflow_model import queue_model_logging
            from modelcycle.core.training import TrainingContext, TrainingReporter

            model_config = self.model_config
            registry = self.registry
            plan = attempts.plan(self.work_dir / "runs", self.config, restart=restart)
            if not supports_checkpoints(registry.hook):
                print(f"note: framework '{self.config.framework}' writes no checkpoints (no save_checkpoint/"
                      "load_checkpoint hooks): an interrupted run restarts from epoch 1", file=sys.stderr)
            context = TrainingContext(
                config=self.config,
                model_config=model_config,
                registry=registry,
                reporter=TrainingReporter(registry.hook),
                run_id=plan.run_id,
                output_dir=plan.run_dir,
                checkpoint_dir=plan.run_dir / CHECKPOINT_DIR,
                source_dir=self.directory,
            )
            platform = self._platform("training")
            attempt = plan.begin()
            tracker = start_tracker(self.config, self.work_dir, self.directory, plan.run_id, platform,
                                    resume=plan.resumed is not None, abandoned=tuple(plan.abandoned),
                                    attempt=attempt.attempt, started_ms=started_ms)
            if tracker is not None:
                registry.register(tracker, name=f"modelcycle.tracking.{plan.run_id}")
            status = "FAILED"
            try:
                with _autolog_run(tracker, self.config.capture) if tracker is not None else nullcontext():
                    result = registry.call_platform(platform, "run_training_job", context=context)
                if tracker is not None:
                    record_training(tracker, result)
                    if self.config.tracking.log_model and result.model_dir is not None:
                        queue_model_logging(tracker, Path(result.model_dir), self.config.name)
                status = "FINISHED"
            except KeyboardInterrupt:
                status = "KILLED"
                raise
            finally:
                plan.end(status)
                if tracker is not None:
                    registry.pm.unregister(tracker)
                    mlflow_run_id = tracker.finish(status)
            outputs = {
                **result.outputs(), "platform": platform, "framework": self.config.framework,
                "attempt": attempt.attempt, "resumed_from_epoch": context.resumed_epoch,
            }
            if tracker is not None:
                outputs |= {"mlflow_run_id": mlflow_run_id, "tracking_uri": tracker.uri}
            return outputs

        self.model_config  # a bad framework or model: section fails before any state changes
        self._warn_ignored_hyperparameters()
        # serving is left alone: only deploy/cleanup change it; the MLflow writes go on in the writer
        return self._run_stage("train", action, force or restart)

    def _warn_ignored_hyperparameters(self) -> None:
        """Tell the user which hyperparameters they set that the framework does not use."""
        from modelcycle.core.providers import framework_info

        ignored = set(framework_info(self.registry, self.config.framework).ignored_hyperparameters)
        chosen = sorted(ignored & self.config.hyperparameters.model_fields_set)
        if chosen:
            print(f"warning: framework '{self.config.framework}' ignores hyperparameters "
                  f"{', '.join(chosen)}; remove them or pick another framework", file=sys.stderr)

    def _endpoint_name(self, run_id: str) -> str:
        return f"{self.config.name}-{run_id[:8]}"

    def deploy(self, force: bool = False, run_id: str | None = None, best: str | None = None) -> dict[str, Any]:
        """Serve a trained model on the serving platform; returns the endpoint record.

        The swap has no downtime: the new endpoint is started and answering, then the state
        record switches to it, then the previous one is stopped (on the local platform both serve
        the same URL meanwhile). If the new endpoint fails, the previous one keeps serving and
        the state keeps pointing at it.

        Concurrent deploys agree on one endpoint: a ``force`` deploy that, once it holds the
        use case's lock, finds the same run deployed and in service by a deploy that finished
        after this call began, reports that endpoint instead of replacing it.

        Args:
            force: redeploy even when the endpoint is in service.
            run_id: deploy this tracked run's model (a prefix is enough) instead of the latest.
            best: deploy the finished run with the best value of this metric (e.g. test_accuracy).
        """
        began = utcnow()
        kept: dict[str, Any] = {}  # the previous endpoint while its successor starts
        replaced: dict[str, Any] = {}  # the previous endpoint once its successor is recorded
        chosen: dict[str, Any] | None = None
        if run_id or best:
            from modelcycle.core.experiments import find_run

            chosen = find_run(self, run_id=run_id, best=best)

        def target(state: State) -> tuple[str, Path]:
            if chosen is not None:
                return chosen["run_id"], Path(chosen["model_dir"])
            train = state.stage("train").outputs
            return train["run_id"], Path(train["model_dir"])

        def action(state: State) -> dict[str, Any]:
            target_run, model_dir = target(state)
            verify_model(model_dir)  # a corrupt or changed model is refused before any endpoint changes
            from modelcycle.core.serving.script_handlers import check_handlers

            check_handlers(model_dir)  # a script model's inference.py: syntax (file:line), model_fn
            previous = dict(state.stage("deploy").outputs)
            self._stop_unrecorded_endpoints(previous)
            platform = self._platform("serving")
            kept.update(previous)
            endpoint = self.registry.call_platform(
                platform,
                "deploy_endpoint",
                name=self._endpoint_name(target_run),
                model_dir=model_dir,
                settings=self.config.serving,
                token=self.config.endpoint_token(),
                work_dir=self.work_dir,
                monitoring=self.config.monitoring,
            ) | {"run_id": target_run, "deployed_at": utcnow()}
            kept.clear()
            if previous.get("name") and not _same_endpoint(previous, endpoint):
                replaced.update(previous, platform=previous.get("platform", platform))
            return endpoint

        def still_valid(outputs: dict[str, Any]) -> bool:
            if force and outputs.get("deployed_at", "") <= began:  # not deployed while this call waited
                return False
            wanted = chosen["run_id"] if chosen else self.store.read().stage("train").outputs.get("run_id")
            return outputs.get("run_id") == wanted and self.describe_endpoint(outputs)["status"] == "InService"

        try:
            outputs = self._run_stage("deploy", action, False, still_valid=still_valid)
        except BaseException:
            if kept:
                self._keep_serving(kept)
            raise
        if replaced:  # the state no longer names it: stopped now, without holding the lock
            self._retire_endpoint(replaced)
        return outputs

    def _stop_unrecorded_endpoints(self, recorded: dict[str, Any]) -> None:
        """Stop the use case's local endpoint processes the state does not name (a deploy killed
        between starting its endpoint and recording it leaves one sharing the URL). Called under
        the use case lock, so no other deploy is between those two steps."""
        from modelcycle.core.recovery import LOCAL_PLATFORM, endpoints_on_disk

        unrecorded = [r for r in endpoints_on_disk(self.work_dir)[0] if r["pid"] != recorded.get("pid")]
        if unrecorded:
            self.registry.load_platform(LOCAL_PLATFORM, "serving")
        for record in unrecorded:
            self._retire_endpoint(record)

    def _retire_endpoint(self, previous: dict[str, Any]) -> None:
        """Stop the endpoint a deploy replaced; a failure only warns (the new one serves)."""
        try:
            self.registry.call_platform(previous["platform"], "delete_endpoint", endpoint=previous)
        except ModelcycleError as exc:
            print(f"warning: the replaced endpoint {previous.get('name')} (pid {previous.get('pid')}) could not "
                  f"be stopped: {exc}; stop it by hand", file=sys.stderr)

    def _keep_serving(self, previous: dict[str, Any]) -> None:
        """After a failed redeploy whose predecessor still serves, record that one as deployed again
        (the state reads as before the attempt; the failure stays in the history)."""
        if self.describe_endpoint(previous).get("status") not in SERVING_STATUSES:
            return
        with self.store.lock(f"pid {os.getpid()} restoring 'deploy'", self.lock_timeout):
            state = self.store.read()
            record = state.stage("deploy")
            if record.status != "failed" or record.pid != os.getpid() or record.outputs != previous:
                return  # another process moved on meanwhile
            record.status, record.error = "done", None
            state.record("deploy", "kept", endpoint=previous.get("name"))
            self.store.write(state)

    def govern(self, stage: str | None = None, force: bool = False, reason: str | None = None) -> dict[str, Any]:
        """Record the deployed endpoint's facts on its model asset in the inventory and move the
        asset's lifecycle stage (develop → test when first deployed; ``stage`` moves it on, ``force``
        with a ``reason`` skips or goes back); mirrored by the governance backend plugin
        ``governance.backend`` names (``ibm``: IBM AI Factsheets). An unknown backend, invalid
        settings or a refused move fail before anything changes.
        Returns ``{"asset_id", "stage", "backend", "run_id", "endpoint", "deployment_id"}``
        (and ``remote``: the ids the backend keeps)."""
        from modelcycle.core.governance.service import Governance

        governance = Governance(self)  # one backend for the whole command
        governance.preflight(stage, force, reason)  # a bad backend or refused move changes nothing
        return self._run_stage(
            "govern", lambda state: governance.govern_deployed(state, stage, force, reason), force or stage is not None,
            still_valid=governance.still_valid,
        )

    def run(self, until: str = DEFAULT_UNTIL, force: bool = False) -> dict[str, dict[str, Any]]:
        """Run the pipeline's stages (:data:`PIPELINE`) in order up to ``until``, skipping those
        already done; after a crash it continues where it stopped."""
        if until not in PIPELINE:
            raise StageError(until, f"unknown stage; 'run --until' takes one of: {', '.join(PIPELINE)}")
        results: dict[str, dict[str, Any]] = {}
        for name in PIPELINE[: PIPELINE.index(until) + 1]:
            results[name] = getattr(self, name)(force=force)
        return results

    # -- experiments -----------------------------------------------------------------------
    def runs(self, sort: str | None = None, ascending: bool | None = None) -> list[dict[str, Any]]:
        """The tracked training runs (the ExperimentAnalytics table): newest first, or by the
        metric ``sort`` (``*loss*`` metrics smallest first unless ``ascending`` says otherwise)."""
        from modelcycle.core.experiments import list_runs

        return list_runs(self, sort=sort, ascending=ascending)

    def sweep(self, param: str, values: Iterable[Any]) -> list[dict[str, Any]]:
        """Train one tracked run per value of ``param`` (``hidden_channels``, ``learning_rate``,
        ``model.x``: a bare name is a hyperparameter when one has that name, else a model option)
        with this use case's overrides; returns each run's train outputs plus its ``override``."""
        from modelcycle.core.experiments import sweep_overrides

        results = []
        for extra in sweep_overrides(param, [str(v) for v in values]):
            trial = UseCase(self.directory, overrides={**self.overrides, **extra}, plugins=self._extra_plugins,
                            lock_timeout=self.lock_timeout)
            results.append({"override": extra, **trial.train(force=True)})
        return results

    def pipeline(self, platform: str = "sagemaker", format: str = "asl", graph: str | os.PathLike[str] | None = None,
                 workflow_role: str | None = None, upload: bool = False) -> dict[str, Any]:
        """Export this use case's training pipeline as ``platform`` runs it (SageMaker: the Step
        Functions train → model → endpoint config → endpoint state machine); returns
        ``{"document", "states", "graph", "uploaded"}``. ``graph`` also draws it to a PNG."""
        self.registry.load_platform(platform, "training")
        return self.registry.call_platform(
            platform, "export_pipeline", config=self.config, format=format,
            graph=Path(graph) if graph else None, workflow_role=workflow_role, upload=upload,
        )

    # -- actions ---------------------------------------------------------------------------
    def describe_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        """``endpoint`` (a stored record) refreshed with its live ``status`` by its platform."""
        platform = endpoint.get("platform", self.config.serving.platform)
        self.registry.load_platform(platform, "serving")
        return self.registry.call_platform(platform, "describe_endpoint", endpoint=endpoint)

    def endpoint(self) -> dict[str, Any] | None:
        """The deployed endpoint's record with its live status, or ``None``. While a redeploy
        runs, that is the previous endpoint: it serves until the new one has replaced it."""
        state = self.store.read()
        record = state.stages.get("deploy")
        if record is None or not record.outputs.get("name") or record.status not in ("done", "running"):
            return None
        return self.describe_endpoint(record.outputs)

    def score(self, samples: int = 10, images: Any = None, labels: Any = None) -> ScoreResult:
        """Score ``samples`` test images (or the given raw ``images``) on the endpoint."""
        import numpy as np
        import orjson

        endpoint = self.endpoint()
        if endpoint is None or endpoint["status"] not in SERVING_STATUSES:
            status = "not deployed" if endpoint is None else f"status {endpoint['status']}"
            raise StageError("score", f"the endpoint is {status}: run 'modelcycle deploy' first")
        features: tuple[Any, ...] = ()
        if images is None:
            from modelcycle.core.datasets import load_dataset

            dataset = load_dataset(self.config.data.dataset, settings=self.config.data)
            test = dataset.test.take(samples)
            images, labels, features = test.images, test.labels, dataset.features
        from modelcycle.core.serving.script_client import script_manifest

        manifest = script_manifest(endpoint, self.work_dir)
        if manifest is not None:  # the user's handlers answer: their format, not modelcycle's
            return self._score_script(endpoint, manifest, np.asarray(images), labels)
        request: dict[str, Any] = {"input_data": [{"values": np.asarray(images)}]}
        if features:  # tabular: named fields, categories as text, as a client sends them
            from modelcycle.core.serving.tabular import records_document

            request = records_document(images, features)
        body = orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)
        started = time.perf_counter()
        status, payload, _ = self.registry.call_platform(
            endpoint["platform"], "invoke_endpoint", endpoint=endpoint, body=body,
            content_type="application/json", accept="application/json", token=self.config.endpoint_token(),
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        document = orjson.loads(payload)
        if status != 200:
            raise StageError("score", f"endpoint answered {status}: {document.get('error', document)}")
        prediction = document["predictions"][0]
        values, fields = prediction["values"], prediction.get("fields", ["prediction", "probability"])
        at, probability_at = fields.index("prediction"), fields.index("probability")
        return ScoreResult(
            predictions=[int(v[at]) for v in values],
            probabilities=[list(v[probability_at]) for v in values],
            labels=[] if labels is None else [int(x) for x in labels],
            response_time_ms=elapsed_ms,
            scoring_id=document.get("scoring_id"),
            response=document,
        )

    def _score_script(self, endpoint: dict[str, Any], manifest: Any, images: Any, labels: Any) -> ScoreResult:
        """``score`` on a script-mode endpoint: the raw images as NPY (what the seeds' handlers
        read), the answer read as :func:`~modelcycle.core.serving.script_client.read_answer` does."""
        from modelcycle.core.errors import ServingError
        from modelcycle.core.serving.script_client import REQUEST_TYPE, npy_body, read_answer

        started = time.perf_counter()
        status, payload, content_type = self.registry.call_platform(
            endpoint["platform"], "invoke_endpoint", endpoint=endpoint, body=npy_body(images),
            content_type=REQUEST_TYPE, accept="application/json", token=self.config.endpoint_token(),
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            raise StageError("score", f"endpoint answered {status}: {payload.decode(errors='replace')[:500]}")
        try:
            answer = read_answer(payload, content_type, len(images), len(manifest.classes))
        except ServingError as exc:
            raise StageError("score", str(exc)) from None
        return ScoreResult(
            predictions=[int(i) for i in answer.probabilities.argmax(axis=1)],
            probabilities=answer.probabilities.tolist(),
            labels=[] if labels is None else [int(x) for x in labels],
            response_time_ms=elapsed_ms,
            scoring_id=None,  # the body is the handlers'; the endpoint sends the id as x-scoring-id
            response=answer.document if isinstance(answer.document, dict) else {"predictions": answer.document},
        )

    def _stop_endpoint(self) -> int:
        state = self.store.read()
        endpoint = state.stages.get("deploy")
        if endpoint is None or not endpoint.outputs.get("name"):
            return 0
        platform = endpoint.outputs.get("platform", self.config.serving.platform)
        self.registry.load_platform(platform, "serving")
        return int(self.registry.call_platform(platform, "delete_endpoint", endpoint=endpoint.outputs))

    def cleanup(self, records: bool = False, governance: bool = False) -> dict[str, int]:
        """Stop the endpoint, delete the monitoring subscription (``"monitoring": 1``; with
        ``records`` also its payload/feedback records) and reset the stages that depended on
        them; returns removal counts. With a damaged ``state.json`` it stops the endpoints it finds on
        disk and leaves the rest (and the damaged file) to ``repair``."""
        with self.store.lock(f"pid {os.getpid()} running 'cleanup'", self.lock_timeout):
            from modelcycle.core.recovery import stop_endpoints_on_disk

            try:
                self.store.read()
            except StateDamagedError as exc:
                print(f"warning: {exc.path} is damaged ({exc.problem}): stopped the endpoints found on disk only; "
                      f"run 'modelcycle -C {self.directory} status --repair', then 'modelcycle cleanup' again to "
                      "remove the monitoring subscription and records", file=sys.stderr)
                return {"serving": stop_endpoints_on_disk(self)}
            known = self.store.exists()  # state deleted: the endpoints on disk are all it knows
            removed = {"serving": self._stop_endpoint() if known else stop_endpoints_on_disk(self)}
            from modelcycle.core.monitoring import service as monitoring

            removed.update(monitoring.cleanup(self, records=records))
            from modelcycle.core.governance import on_cleanup  # with governance: delete its records

            removed.update(on_cleanup(self, remove=governance))
            state = self.store.read()
            for name in ("deploy", "govern", "monitor"):
                if name in state.stages:
                    state.stages[name].status = "pending"
                    state.stages[name].outputs = {}
            state.record("cleanup", "done", removed=removed)
            self.store.write(state)
        return removed

    def repair(self) -> dict[str, Any]:
        """Rebuild a missing or damaged ``state.json`` from disk (the newest run whose model
        verifies, a live endpoint serving one), keeping the damaged file as a backup; a readable
        state is left alone. See :func:`modelcycle.core.recovery.rebuild_state` for the result."""
        from modelcycle.core.recovery import rebuild_state

        with self.store.lock(f"pid {os.getpid()} running 'status --repair'", self.lock_timeout):
            return rebuild_state(self)

    def status(self) -> dict[str, Any]:
        """The seeds' state table (trained/deployed/governed/monitored) plus ids and metrics;
        ``stages`` maps each stage to its status, ``interrupted`` for one left running by a
        process that died, ``training`` describes an interrupted training run ``train`` would
        resume (``None`` when there is none), and ``recovery`` says how to get back a trained
        model when ``state.json`` was deleted. ``run_id``/``metrics`` are the latest trained
        run's; ``served`` is ``{"run_id", "metrics"}`` of the run the endpoint serves (after a
        sweep or ``deploy --run`` it differs), or ``None`` when nothing is deployed.

        Raises:
            StateDamagedError: ``state.json`` is damaged (names it and ``status --repair``).
        """
        from modelcycle.core import attempts
        from modelcycle.core.recovery import recovery_hint

        state = self.store.read()
        train = state.stages.get("train")
        endpoint = None
        try:
            endpoint = self.endpoint()
        except ModelcycleError as exc:
            endpoint = {"status": f"unknown ({exc})"}
        flags = {stage.flag: state.done(name) for name, stage in STAGES.items()}
        training, newest = None, attempts.latest(self.work_dir / "runs")
        if newest is not None and newest.unfinished():
            training = {"run_id": newest.run_id, "status": "interrupted" if newest.killed() else newest.status,
                        "attempt": newest.attempt, "epochs": newest.epochs,
                        "last_complete_epoch": attempts.last_complete_epoch(self.work_dir / "runs" / newest.run_id)}
        flags["deployed"] = bool(endpoint and endpoint.get("status") in SERVING_STATUSES)
        return {
            "use_case": self.config.name,
            "framework": self.config.framework,
            "directory": str(self.directory),
            **flags,
            # a 'running' stage whose process died shows as 'interrupted' ('train' resumes it)
            "stages": {name: "interrupted" if record.interrupted() else record.status
                       for name, record in state.stages.items()},
            "run_id": train.outputs.get("run_id") if train else None,
            "metrics": train.outputs.get("metrics", {}) if train else {},
            "model_archive": train.outputs.get("archive") if train else None,
            "endpoint": endpoint,
            "served": self._served_run(endpoint, train.outputs if train else {}),
            "training": training,
            "recovery": recovery_hint(self),
        }

    def _served_run(self, endpoint: dict[str, Any] | None, trained: dict[str, Any]) -> dict[str, Any] | None:
        """``{"run_id", "metrics"}`` of the run ``endpoint`` serves (its model's manifest holds
        the metrics), or ``None`` without an endpoint serving a known run."""
        run_id = (endpoint or {}).get("run_id")
        if not run_id:
            return None
        if run_id == trained.get("run_id"):
            return {"run_id": run_id, "metrics": trained.get("metrics", {})}
        from modelcycle.core.artifacts import read_manifest

        try:
            metrics = dict(read_manifest(self.work_dir / "runs" / run_id / "model").metrics)
        except (ModelcycleError, OSError, ValueError):
            metrics = {}
        return {"run_id": run_id, "metrics": metrics}

    # -- monitoring (modelcycle.core.monitoring) ---------------------------------------------
    def monitor(self, force: bool = False) -> dict[str, Any]:
        """Subscribe the deployed endpoint to monitoring: payload schema, monitors, and the drift
        baseline (held-out test images scored in-process); returns the subscription."""
        from modelcycle.core.monitoring import service

        mirror = service.open_mirror(self)  # an unknown backend or bad settings fail before any state changes
        return self._run_stage(
            "monitor", lambda state: service.subscribe(self, state, mirror), force,
            still_valid=lambda outputs: service.subscription_valid(self, outputs, mirror.name),
        )

    def log_payload(self, samples: int = 100, dataset: str | None = None, offset: int = 0, images: Any = None) -> dict[str, Any]:
        """Score ``samples`` test images (of ``dataset``, from ``offset``; or raw ``images``) on
        the endpoint and wait until their payload records are stored."""
        from modelcycle.core.monitoring import service

        return service.log_payload(self, samples=samples, dataset=dataset, offset=offset, images=images)

    def log_feedback(self, samples: int = 100) -> dict[str, Any]:
        """Attach true labels to ``samples`` payload records (test images whose label is known)."""
        from modelcycle.core.monitoring import service

        return service.log_feedback(self, samples=samples)

    def attach_feedback(self, labels: Mapping[str, int]) -> int:
        """Attach ground truth ``{scoring_id: label}`` to earlier scored records."""
        from modelcycle.core.monitoring import service

        return service.attach_feedback(self, labels)

    def evaluate(self, fail_on_violation: bool = False, plots: bool = True, every: float | None = None,
                 times: int | None = None, on_result: Callable[[list[dict[str, Any]]], Any] | None = None,
                 ) -> list[dict[str, Any]]:
        """Run every enabled monitor, store and return one measurement each (plots under
        ``.modelcycle/plots/``); ``fail_on_violation`` raises ThresholdViolationError. With
        ``every`` (seconds) evaluate on a schedule, ``times`` times (``None``: until interrupted),
        calling ``on_result`` with each evaluation's measurements; returns all of them."""
        from modelcycle.core.monitoring import service

        return service.evaluate(self, fail_on_violation=fail_on_violation, plots=plots, every=every, times=times,
                                on_result=on_result)

    def evaluations(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The stored measurements of this use case, oldest first."""
        from modelcycle.core.monitoring import service

        return service.evaluations(self, limit=limit)

    # -- batch transform (modelcycle.core.transform) -----------------------------------------
    def transform(self, output: str | os.PathLike[str], input: str | os.PathLike[str] | None = None,
                  split: str | None = None, batch_size: int = 1024, log_payload: bool = False, force: bool = False,
                  skip_invalid: bool = False, progress: Callable[[int, int], Any] | None = None,
                  platform: str | None = None) -> dict[str, Any]:
        """Score a folder of ``.npy``/``.jsonl`` files (or one file, or an ``s3://`` prefix) or the
        data set's ``split`` with the deployed (else latest trained) model, one JSON line per record
        in the endpoint's output shape into ``output``, in-process or (``platform`` / ``serving.platform``
        ``sagemaker``) as a batch job; ``log_payload`` stores the records as the endpoint's payload.
        See :mod:`modelcycle.core.transform`."""
        from modelcycle.core.transform import transform

        return transform(self, output, input=input, split=split, batch_size=batch_size, log_payload=log_payload,
                         force=force, skip_invalid=skip_invalid, progress=progress, platform=platform)

    # -- governance (modelcycle.core.governance) ---------------------------------------------
    # Stage moves go through govern(stage=..., reason=..., force=...); cleanup(governance=True)
    # deletes the records (and what the backend created).
    def inventory(self) -> list[dict[str, Any]]:
        """Every use case of the governance store with its model assets (stage, metrics,
        deployments, lineage, stage history, custom facts); this use case's finished training
        runs are imported first."""
        from modelcycle.core.governance.service import Governance

        return Governance(self).inventory()

    def facts(self, run: str | None = None) -> dict[str, Any]:
        """The custom facts of run ``run``'s model asset (a run-id prefix; default: the deployed
        run, else the latest): ``{"run_id", "asset_id", "facts": {key: {"value", "who", "at"}}}``."""
        from modelcycle.core.governance.service import Governance

        return Governance(self).facts(run)

    def set_fact(self, key: str, value: Any, run: str | None = None) -> dict[str, Any]:
        """Set custom fact ``key`` to ``value`` on run ``run``'s model asset (default: deployed,
        else latest), audited; an asset the governance backend mirrors gets it too. Returns the
        fact (``key``, ``value``, ``who``, ``at``, ``run_id``; ``remote``: what the backend sent)."""
        from modelcycle.core.governance.service import Governance

        return Governance(self).set_fact(key, value, run=run)

    def factsheet(self, format: str = "html", output: str | os.PathLike[str] | None = None,
                  run: str | None = None) -> dict[str, Any]:
        """Write the factsheet of run ``run``'s model asset (default: deployed, else latest) as
        ``format`` (``html``, ``md`` with its PNGs beside it, ``json``) to ``output`` (default:
        ``factsheet-<run>.<format>`` in the use case; ``"-"``: JSON returned as ``text``).
        Returns ``{"path", "format", "run_id", "asset_id", "images", "evaluation"}``."""
        from modelcycle.core.governance.factsheet import write_factsheet
        from modelcycle.core.governance.service import Governance

        return write_factsheet(Governance(self), run=run, fmt=format, output=output)
