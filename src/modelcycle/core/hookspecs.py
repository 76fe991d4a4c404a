"""Every hook modelcycle calls, grouped by concern.

Each spec says who calls it, when, with what, what it must return, and whether the first
non-``None`` answer wins (``firstresult``) or all answers are collected. Implementations may take
any subset of a spec's arguments (pluggy's opt-in arguments), so specs only ever gain arguments.

A ``firstresult`` hook that no plugin answers is an error raised by the caller
(:class:`~modelcycle.core.errors.PluginContractError`), never a silent ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.markers import hookspec

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

    from modelcycle.core.dataset_types import Dataset, Split
    from modelcycle.core.plugin_types import FrameworkInfo, GovernanceBackend, MonitoringBackend
    from modelcycle.core.serving.context import ServingContext
    from modelcycle.core.training_types import TrainingContext, TrainingResult

__all__ = [
    "FrameworkSpecs",
    "ServingSpecs",
    "FactsSpecs",
    "LifecycleSpecs",
    "PlatformSpecs",
    "DatasetSpecs",
    "GovernanceSpecs",
    "MonitoringSpecs",
    "CommandSpecs",
    "ALL_SPECS",
]


class FrameworkSpecs:
    """Answered by the one framework plugin a use case selects (``framework:`` in config)."""

    @hookspec(firstresult=True)
    def model_config_class(self) -> type:
        """Return the pydantic model class that validates the ``model:`` config section.

        Called by the registry when it loads the framework, before any other hook. firstresult.
        """

    @hookspec(firstresult=True)
    def framework_info(self) -> FrameworkInfo:
        """Describe the framework to the core: the distribution and extras that provide it, the
        libraries it uses (the factsheet's framework row), the requirements a serving or training
        container needs beyond modelcycle, and the example configs ``modelcycle init`` can write.

        Called by ``init``, by the trainer (manifest and ``code/requirements.txt``) and by the
        factsheet, on the selected framework only. Optional: without it the core derives the
        distribution from the entry point and writes a generic template. firstresult.
        """

    @hookspec(firstresult=True)
    def build_model(self, model_config: Any, dataset: Dataset, context: TrainingContext) -> Any:
        """Build an untrained model for ``dataset``, seeded from ``context.hyperparameters.seed``.

        Called by the trainer at the start of ``train``, after ``model_config_class`` validated
        ``model_config`` (``None`` without a config class). ``context.input_shape`` is one
        example's ``(C, H, W)`` (tabular data: ``(W,)``, the encoded record's width);
        ``len(dataset.classes)`` the number of classes. Must return the
        framework's model object, which the trainer passes back to every other training hook.
        firstresult.
        """

    @hookspec(firstresult=True)
    def train_step(self, model: Any, batch: Any, context: TrainingContext) -> float:
        """Run one optimisation step on ``batch`` and return the batch loss as a float.

        Called by the plugin's own ``fit`` loop through ``context.hook.train_step(...)`` (so
        observers and overrides apply); ``batch`` is whatever ``fit`` passes (typically
        ``(inputs, labels)``). PyTorch and Keras step the optimizer here; Lightning's
        ``training_step`` calls it and gets the loss tensor back, the Trainer doing backward and
        step. Per-run objects (optimizer, scheduler) live in ``context.state``. firstresult.
        """

    @hookspec(firstresult=True)
    def fit(self, model: Any, dataset: Dataset, context: TrainingContext) -> TrainingResult:
        """Train ``model`` for ``context.hyperparameters.epochs`` epochs and return a
        :class:`~modelcycle.TrainingResult`.

        Called by the trainer once. The data: ``dataset.train`` / ``dataset.test`` are
        :class:`~modelcycle.Split` objects holding raw ``uint8`` images ``(N, H, W)`` or
        ``(N, H, W, C)`` and ``int64`` labels, read-only and already cut to ``data.train_limit``
        / ``test_limit``. Normalise them yourself with ``context.preprocessing.apply(raw)``,
        which takes float32 ``(N, C, H, W)`` pixels in 0..255 and returns the model input
        (the same transform the endpoint applies before ``predict_fn``).

        The shared hyperparameters (``context.hyperparameters``): ``epochs``, ``batch_size``,
        ``test_batch_size``, ``optimizer`` (adam|sgd), ``learning_rate``, ``lr_schedule``
        (onecycle|constant), ``momentum``, ``beta_1``, ``beta_2``, ``weight_decay``, ``seed``,
        ``log_interval``. A framework that ignores some lists them in
        ``FrameworkInfo.ignored_hyperparameters``; setting one then warns the user.

        Report progress through ``context.reporter`` (a :class:`~modelcycle.TrainingReporter`):
        ``start_epoch(epoch, num_batches)``; every ``log_interval`` batches
        ``batch(epoch, batch_index, num_batches, batch_size, total, loss)`` (prints the seeds'
        ``Train Epoch: …`` line); after evaluating ``test_result(loss, correct, total)``
        (``Test set: …``); last ``end_epoch(epoch, metrics, context)``, which records the epoch
        in ``reporter.history`` and broadcasts ``on_epoch_end``. Epochs are 1-based.

        Resumable runs: train from ``context.start_epoch(model)`` (1, or the epoch after the
        run's last checkpoint, restored through ``load_checkpoint`` — call it once the optimizer
        and schedule exist) and call ``context.save_checkpoint(model, epoch)`` after each
        ``end_epoch``. When every epoch was already done, return the last history entry's metrics
        (``reporter.last_metrics()``).

        Return ``TrainingResult(run_id=context.run_id, metrics=..., history=reporter.history)``
        where ``metrics`` (the last epoch's) holds at least ``train_loss``, ``test_loss`` and
        ``test_accuracy`` (0..1); ``train_accuracy`` is optional. Those keys drive ``runs``,
        ``deploy --best``, the factsheet curves and the tracked MLflow metrics. firstresult.
        """

    @hookspec(firstresult=True)
    def evaluate(self, model: Any, split: Split, context: TrainingContext) -> dict[str, float]:
        """Evaluate ``model`` on ``split`` (raw images, as in ``fit``); return at least
        ``{"loss": mean cross-entropy, "accuracy": 0..1, "correct": int, "total": int}``.

        Called by ``fit`` implementations after each epoch and by the conformance suite.
        firstresult.
        """

    @hookspec(firstresult=True)
    def save_model(self, model: Any, model_dir: Path, context: TrainingContext) -> list[str]:
        """Write the trained model's files into ``model_dir``; return their paths relative to it.

        Called by the trainer once training ends (rank 0 only). The core adds the manifest
        (``modelcycle.json``: framework and its provider, preprocessing, input schema, classes,
        dataset checksums, metrics), ``code/inference.py`` + ``requirements.txt`` and
        ``model.tar.gz`` afterwards, and checks every listed file's SHA-256 when loading.
        Prefer formats that load without pickle. firstresult.
        """

    @hookspec(firstresult=True)
    def save_checkpoint(self, model: Any, directory: Path, context: TrainingContext) -> list[str]:
        """Write what resuming after the epoch that just ended needs into ``directory``; return
        the names of the files written (relative to ``directory``).

        Called through ``context.save_checkpoint(model, epoch)``, which ``fit`` calls after each
        completed epoch (after ``reporter.end_epoch``). Write the model's weights, the optimizer's
        and scheduler's states (kept in ``context.state``), the framework's RNG states (torch's
        global and data-order generators, TensorFlow's) and any loop state. ``directory`` is a
        fresh staging directory: the core adds the epoch, the reporter's history and Python's and
        NumPy's RNG states, fsyncs, and commits it atomically (rename, then the "last complete
        epoch" marker) once the hook returns. Prefer formats that load without pickle.

        Optional, with ``load_checkpoint``: a framework implementing neither still trains, but an
        interrupted run of it restarts from epoch 1 (the user is told so). firstresult.
        """

    @hookspec(firstresult=True)
    def load_checkpoint(self, model: Any, directory: Path, context: TrainingContext) -> bool:
        """Restore what ``save_checkpoint`` wrote into ``directory`` and return ``True``.

        Called through ``context.start_epoch(model)`` at the start of ``fit``, after ``fit`` built
        the optimizer and schedule, when the run resumes from a checkpoint: load the weights into
        ``model``, the optimizer's and scheduler's states, and the RNG states, so the remaining
        epochs train exactly as they would have without the interruption (load tensors with
        ``weights_only=True``). A framework whose own loop restores (Lightning's ``ckpt_path``) may
        record the path in ``context.state`` and restore when its loop starts. Raise on a file it
        cannot read; the core names the checkpoint and the fix. firstresult.
        """

    @hookspec(firstresult=True)
    def summarize_model(self, model: Any, context: TrainingContext) -> str:
        """Return a human-readable layer/parameter summary (torchinfo, keras summary).

        Called by the trainer before training; the text is printed and recorded as a fact.
        firstresult.
        """


class ServingSpecs:
    """The SageMaker inference-handler contract, answered by the artifact's framework plugin.

    The same code runs in the local endpoint and in a SageMaker container. The core registers
    ``trylast`` JSON/NPY defaults for ``input_fn`` and ``output_fn``.
    """

    @hookspec(firstresult=True)
    def model_fn(self, model_dir: Path, context: ServingContext) -> Any:
        """Load the model stored in ``model_dir`` (the files ``save_model`` wrote; weights
        loaded safely, never with pickle). Called once per serving process. firstresult."""

    @hookspec(firstresult=True)
    def input_fn(self, body: bytes, content_type: str, context: ServingContext) -> np.ndarray:
        """Decode a request body into a raw-pixel float32 array ``(N, C, H, W)`` in 0..255.

        Raise :class:`~modelcycle.core.errors.ServingError` (status 4xx) for bad input.
        """

    @hookspec(firstresult=True)
    def predict_fn(self, data: np.ndarray, model: Any, context: ServingContext) -> np.ndarray:
        """Return class probabilities ``(N, K)`` (float32, rows summing to 1) for raw pixels
        ``data`` ``(N, C, H, W)`` float32 in 0..255: apply ``context.normalize(data)`` first, the
        training-time preprocessing recorded in the manifest. firstresult."""

    @hookspec(firstresult=True)
    def output_fn(
        self, prediction: np.ndarray, accept: str, context: ServingContext, scoring_id: str | None
    ) -> tuple[bytes, str]:
        """Encode probabilities for the client; return ``(body, content_type)``.

        ``accept`` is the negotiated media type; ``scoring_id`` identifies the request (the
        endpoint also sends it as the ``X-Scoring-Id`` header).
        """

    @hookspec(firstresult=True)
    def script_handler_defaults(self, model_dir: Path, context: ServingContext) -> dict[str, Any]:
        """Return the default SageMaker handlers for a script-mode model's ``inference.py``
        (:mod:`modelcycle.core.serving.script_handlers`): ``{"model_fn": f(model_dir),
        "input_fn": f(body, content_type), "predict_fn": f(data, model), "output_fn":
        f(prediction, accept)}``, any subset, as the framework's SageMaker inference toolkit
        defines them; the core's JSON/CSV/NPY ``input_fn``/``output_fn``
        (:mod:`~modelcycle.core.serving.script_codecs`) fill what is left out. Offer
        ``model_fn`` only when ``model_dir`` holds what it loads.

        Called when a script-mode model is checked at ``deploy`` and when its endpoint starts.
        Optional: a framework without it has no defaults (``model_fn`` and ``predict_fn`` are then
        required of the user). firstresult.
        """


class FactsSpecs:
    """Facts about a run, collected from every plugin and merged."""

    @hookspec
    def collect_facts(self, context: TrainingContext, stage: str) -> dict[str, Any] | None:
        """Return facts (``params``, ``metrics``, ``tags``, ``inputs``, ``summary``) to record.

        Called by the trainer at ``stage`` ``"start"`` and ``"end"`` of training with
        ``capture: manual``; all results are collected and merged key by key.
        """


class LifecycleSpecs:
    """Broadcast observers: progress output, tracking and user plugins listen here."""

    @hookspec
    def on_stage_start(self, stage: str, use_case: Any) -> None:
        """A lifecycle stage (``train``, ``deploy``, ...) is about to run. All called."""

    @hookspec
    def on_stage_end(self, stage: str, use_case: Any, outputs: dict[str, Any]) -> None:
        """A stage finished and its ``outputs`` were persisted. All called."""

    @hookspec
    def on_stage_error(self, stage: str, use_case: Any, error: BaseException) -> None:
        """A stage raised ``error``; the state records it as failed. All called."""

    @hookspec
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], context: TrainingContext) -> None:
        """An epoch ended with ``metrics`` (train/test loss and accuracy). All called."""


class PlatformSpecs:
    """Answered by the platform a use case selects per role (``training.platform``, ...).

    The registry calls these on the selected platform plugin only.
    """

    @hookspec(firstresult=True)
    def run_training_job(self, context: TrainingContext) -> TrainingResult:
        """Train the use case's model (in-process, subprocess or remote job) and package it.

        Must return a :class:`~modelcycle.core.training.TrainingResult` whose ``model_dir``
        holds the manifest and whose ``archive`` is the ``model.tar.gz``. firstresult.
        """

    @hookspec(firstresult=True)
    def deploy_endpoint(
        self, name: str, model_dir: Path, settings: Any, token: str | None, work_dir: Path, monitoring: Any
    ) -> dict:
        """Start serving ``model_dir`` as endpoint ``name``; return its record.

        ``settings`` is the ``serving:`` config section; ``token`` the bearer token clients must
        send (``None``: no auth); ``work_dir`` the use case's ``.modelcycle`` directory;
        ``monitoring`` the ``monitoring:`` section (payload logging; overrides included).
        The record is JSON-serialisable and holds at least ``name``, ``url``, ``platform`` and
        ``status``, plus ``payload_logging`` (bool: scored records reach the monitoring store
        through ``flush_payload``) and ``payload_store`` (the masked URL of that store) when the
        endpoint logs its payload; the core reads no other key. It is persisted and passed back
        to the other endpoint hooks. firstresult.
        """

    @hookspec(firstresult=True)
    def invoke_endpoint(
        self, endpoint: dict, body: bytes, content_type: str, accept: str, token: str | None
    ) -> tuple[int, bytes, str]:
        """Send one scoring request; return ``(status_code, body, content_type)``. firstresult."""

    @hookspec(firstresult=True)
    def describe_endpoint(self, endpoint: dict) -> dict:
        """Return the endpoint record refreshed with its live ``status``. firstresult."""

    @hookspec(firstresult=True)
    def delete_endpoint(self, endpoint: dict) -> int:
        """Stop and remove the endpoint; return how many resources were removed. firstresult."""

    @hookspec(firstresult=True)
    def export_pipeline(self, config: Any, format: str, graph: Path | None, workflow_role: str | None, upload: bool) -> dict:
        """Export the use case's training pipeline as this platform would run it.

        ``format`` is platform-defined (SageMaker: ``asl`` or ``json``); ``graph`` a PNG path to
        draw it to; ``upload`` also uploads the inputs the pipeline reads. Returns
        ``{"document": JSON-serialisable, "states": int, "graph": str | None, "uploaded": {}}``.
        Called by ``UseCase.pipeline`` (``modelcycle pipeline export``). Optional. firstresult.
        """

    @hookspec(firstresult=True)
    def fetch_transform_input(self, uri: str, directory: Path) -> list[str] | None:
        """Download the ``.npy``/``.jsonl`` objects under the prefix ``uri`` (e.g.
        ``s3://bucket/prefix/``) into ``directory``, each at its key relative to the prefix, and
        return those relative names, sorted. Return ``None`` when ``uri``'s scheme is not this
        platform's (before any remote call).

        Called by ``modelcycle transform --input URI`` on the run's, the serving and the training
        platform, then every other installed one, until one answers. Raise
        :class:`~modelcycle.core.transform_sources.TransformError` for a prefix with no such
        objects, :class:`~modelcycle.core.errors.ConfigError` for a missing bucket or no
        credentials. Optional. firstresult.
        """

    @hookspec(firstresult=True)
    def store_transform_output(self, path: Path, uri: str) -> str | None:
        """Upload the finished output file ``path`` to ``uri`` (an object URI); return the URI
        written, or ``None`` when ``uri``'s scheme is not this platform's. Called by
        ``modelcycle transform --output URI`` (platforms tried as for ``fetch_transform_input``).
        Optional. firstresult.
        """

    @hookspec(firstresult=True)
    def run_transform_job(
        self, name: str, model_dir: Path, settings: Any, work_dir: Path, input: str | Path, content_type: str,
        split_type: str | None, directory: Path,
    ) -> dict:
        """Score ``input`` with ``model_dir`` as this platform's batch job and bring the answers back.

        ``input`` is the platform's own prefix URI (scored where it is) or a local folder of
        request files (uploaded first); every object holds requests of ``content_type``, one per
        line when ``split_type`` is ``"Line"``, the whole object when it is ``None``. ``name`` is
        the use case's; ``settings`` the ``serving:`` section; ``work_dir`` its ``.modelcycle``.
        Each object ``x`` yields the file ``directory / (x + ".out")`` holding, one per line, the
        endpoint's answer to each of its requests in order. Returns ``{"job_name", "model_name",
        "input_uri", "output_uri", "outputs": [relative names of the .out files]}``.

        Called by ``modelcycle transform`` when ``--platform`` or ``serving.platform`` names this
        platform. Raise :class:`~modelcycle.core.errors.StageError` when the job fails (with the
        platform's reason). Optional: without it the transform runs in-process. firstresult.
        """

    @hookspec(firstresult=True)
    def flush_payload(self, endpoint: dict | None, store: Any, work_dir: Path, token: str | None) -> int:
        """Bring every payload record the platform's endpoints logged into the monitoring
        ``store`` (:class:`~modelcycle.core.monitoring.store.MonitoringStore`, which ingests
        :class:`~modelcycle.core.monitoring.records.PayloadRecord`) and return how many records
        moved: the live ``endpoint`` (``None`` when none is in service) and whatever a stopped or
        killed endpoint of this use case left behind under ``work_dir``; ``token`` is the bearer
        token the endpoint requires (``None``: no auth). When it returns, every request the
        endpoint answered before the call is in the store — except on a platform whose endpoint
        writes its log out of band with a delay (SageMaker Data Capture: objects in S3 within
        minutes), which brings in what has arrived and the rest at a later call.

        Called by the monitoring service before it reads records (``log-payload``,
        ``log-feedback``, ``attach_feedback``, ``evaluate``, ``cleanup``), on the endpoint's
        platform only. A platform without payload logging returns 0; one that does not implement
        the hook is treated so. Raise
        :class:`~modelcycle.core.monitoring.errors.MonitoringError` when the records cannot be
        stored now (they must stay logged). firstresult.
        """

    @hookspec(firstresult=True)
    def send_feedback(self, endpoint: dict, rows: list, token: str | None) -> int:
        """Score labelled records on ``endpoint`` so they are logged with their ground truth:
        ``rows`` is ``[[raw_input, label], ...]``. Returns how many records were stored.

        ``raw_input`` is the raw pixels (a ``(C, H, W)`` or ``(H, W)`` array, 0..255); each row is
        scored, logged as payload whatever the sampling, and stored with its label. A platform
        whose payload log arrives later (SageMaker: requests sent with an ``InferenceId``, the
        labels kept by it) attaches the labels when ``flush_payload`` ingests those records and
        returns the rows sent.

        Called by ``log-feedback`` when too few logged records have a known label, once with
        every row (the platform batches its requests). A platform that cannot do it raises
        :class:`~modelcycle.core.errors.EndpointError` saying what to run instead (one that does
        not implement the hook is reported so); one whose endpoint refuses the rows raises
        :class:`~modelcycle.core.monitoring.errors.MonitoringError`. firstresult.
        """

    @hookspec(firstresult=True)
    def delete_payload(self, endpoint: dict | None, work_dir: Path) -> dict:
        """Delete what the platform's endpoints logged outside the monitoring store that was
        brought into it (SageMaker: the ingested Data Capture objects in S3); ``endpoint`` is the
        deployment's record (already stopped), ``work_dir`` the use case's ``.modelcycle``.
        Returns removal counts by kind (``{"captured_objects": 3}``).

        Called by ``cleanup --records`` after ``flush_payload`` and after the store's records
        are deleted, on the endpoint's platform only. Optional (nothing to delete). firstresult.
        """


class DatasetSpecs:
    """Answered by the one dataset plugin ``data.dataset`` names (entry-point group
    ``modelcycle.datasets``); the core calls these on that plugin only, through
    :func:`modelcycle.core.datasets.load_dataset` (training, scoring, monitoring, factsheets).

    ``settings`` is the use case's ``data:`` section
    (:class:`~modelcycle.core.config.DataConfig`): ``dataset`` (the plugin's name), ``path`` (an
    explicit location, or ``None``) and ``options`` (the plugin's own settings, a dict it
    validates itself, raising :class:`~modelcycle.core.errors.ConfigError` naming the bad key).
    """

    @hookspec(firstresult=True)
    def dataset_locate(self, settings: Any, download: bool) -> Path:
        """Return where the dataset's files are: a directory, or a single file.

        An explicit ``settings.path`` must be used as given (missing files there are an error,
        never a fall-through to another place). ``download`` says whether fetching into the user
        cache is allowed. Raise :class:`~modelcycle.core.errors.DatasetNotFoundError` naming the
        files needed and every place looked at. Called before every load, so it must be cheap
        when the files are present. firstresult.
        """

    @hookspec(firstresult=True)
    def dataset_load(self, location: Path, settings: Any) -> Dataset:
        """Load both splits from ``location`` (what ``dataset_locate`` returned, resolved) into
        in-memory arrays and return a :class:`~modelcycle.core.datasets.Dataset`: images uint8
        ``(N, H, W)`` or ``(N, H, W, C)`` (read-only), labels int64 ``(N,)`` in
        ``0..len(classes) - 1``, the class names, ``source`` (the directory read) and
        ``checksums`` (md5 of every file read, keyed by path relative to ``source``: the model's
        lineage, and what the in-process cache watches for changes).

        Raise :class:`~modelcycle.core.errors.DatasetIntegrityError` for corrupt or inconsistent
        files. The core caches the result per process (same object for unchanged files), so it
        is called once per location and options. firstresult.
        """


class GovernanceSpecs:
    """Answered by the governance backend ``governance.backend`` names (entry-point group
    ``modelcycle.governance``). The local SQL inventory is always the record; a backend mirrors
    governed models (assets, facts, stages) elsewhere and deletes what it created."""

    @hookspec(firstresult=True)
    def governance_settings_class(self) -> type:
        """Return the pydantic class validating this backend's settings (``governance.<name>:``
        plus the backend's own keys written directly under ``governance:``). Optional. firstresult.
        """

    @hookspec(firstresult=True)
    def governance_backend(self, settings: Any) -> GovernanceBackend:
        """Return the backend object (see :class:`~modelcycle.core.plugin_types.GovernanceBackend`:
        ``publish``, ``push_facts``, ``remove``) for ``settings`` (validated by
        ``governance_settings_class``, else ``None``). Called once per command that governs,
        moves a stage, sets facts or cleans up with ``--governance``. firstresult.
        """


class MonitoringSpecs:
    """Answered by the monitoring backend ``monitoring.backend`` names (entry-point group
    ``modelcycle.monitoring``). The local store, payload journal and monitors always run; a
    backend mirrors the subscription, records and quality runs elsewhere."""

    @hookspec(firstresult=True)
    def monitoring_settings_class(self) -> type:
        """Return the pydantic class validating this backend's settings (``monitoring.<name>:``).
        Optional. firstresult."""

    @hookspec(firstresult=True)
    def monitoring_backend(self, settings: Any) -> MonitoringBackend:
        """Return the backend object (see :class:`~modelcycle.core.plugin_types.MonitoringBackend`:
        ``subscribe``, ``forward``, ``run_quality``, ``delete``) for ``settings``. Called once per
        command, so one signed-in client serves the whole command. firstresult.
        """


class CommandSpecs:
    """Command-line and dashboard extension, like pytest's ``addoption``."""

    @hookspec
    def add_commands(self, subparsers: Any, use_case: Any, print_json: Any) -> None:
        """Add subcommands to ``modelcycle``: ``subparsers`` is argparse's sub-parser action;
        ``use_case(args)`` opens the :class:`~modelcycle.core.lifecycle.UseCase` the global
        options name; ``print_json(data)`` prints machine-readable output. Each command should be
        a thin call of a ``UseCase`` method.

        Called on every installed platform, governance and monitoring plugin when the CLI
        builds its parser, so those modules must import nothing heavy at module level
        (``modelcycle --help`` stays fast). All called.
        """

    @hookspec
    def dashboard_panels(self, use_case: Any) -> list[dict[str, Any]]:
        """Return panels for ``use_case``'s Model page of ``modelcycle ui``: a list of
        ``{"title": str, "html": str}`` (an HTML fragment, shown as the plugin's trusted output)
        or ``{"title": str, "figure": dict}`` (a plotly figure ``{"data", "layout"}``).

        Called on every installed platform, governance and monitoring plugin each time the page
        renders, so it must be quick and must not take the use case's lock; an exception shows
        as an error in the panel area. All called.
        """


#: Every spec class, in registration order.
ALL_SPECS = (
    FrameworkSpecs,
    ServingSpecs,
    FactsSpecs,
    LifecycleSpecs,
    PlatformSpecs,
    DatasetSpecs,
    GovernanceSpecs,
    MonitoringSpecs,
    CommandSpecs,
)
