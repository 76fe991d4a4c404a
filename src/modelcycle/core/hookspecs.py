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

    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.training import TrainingContext, TrainingResult
    from modelcycle.core.serving.context import ServingContext

__all__ = ["FrameworkSpecs", "ServingSpecs", "FactsSpecs", "LifecycleSpecs", "PlatformSpecs"]


class FrameworkSpecs:
    """Answered by the one framework plugin a use case selects (``framework:`` in config)."""

    @hookspec(firstresult=True)
    def model_config_class(self) -> type:
        """Return the pydantic model class that validates the ``model:`` config section.

        Called by the registry when it loads the framework, before any other hook. firstresult.
        """

    @hookspec(firstresult=True)
    def build_model(self, model_config: Any, dataset: Dataset, context: TrainingContext) -> Any:
        """Build an untrained model for ``dataset`` (``context.input_shape``, its classes),
        seeded from ``context.hyperparameters.seed``.

        Called by the trainer at the start of ``train``. Must return the framework's model object.
        firstresult.
        """

    @hookspec(firstresult=True)
    def train_step(self, model: Any, batch: Any, context: TrainingContext) -> float:
        """Run one optimisation step on ``batch`` and return the batch loss.

        Called by the plugin's own ``fit`` loop. PyTorch and Keras step the optimizer here and
        return a float; Lightning's ``training_step`` calls it and gets the loss tensor back,
        the Trainer doing backward and step. firstresult.
        """

    @hookspec(firstresult=True)
    def fit(self, model: Any, dataset: Dataset, context: TrainingContext) -> TrainingResult:
        """Train ``model`` on ``dataset.train`` for ``context.hyperparameters.epochs`` epochs.

        Called by the trainer. Must call ``context.reporter`` for progress and per-epoch metrics
        (which broadcasts ``on_epoch_end``) and return a
        :class:`~modelcycle.core.training.TrainingResult`. firstresult.
        """

    @hookspec(firstresult=True)
    def evaluate(self, model: Any, split: Split, context: TrainingContext) -> dict[str, float]:
        """Evaluate ``model`` on ``split``; return at least ``loss``, ``accuracy``, ``correct``, ``total``.

        Called by ``fit`` implementations after each epoch and by the trainer. firstresult.
        """

    @hookspec(firstresult=True)
    def save_model(self, model: Any, model_dir: Path, context: TrainingContext) -> list[str]:
        """Write the trained model's files into ``model_dir``; return their relative paths.

        Called by the trainer once training ends; the manifest and ``code/`` are added by the
        core afterwards. firstresult.
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
        """Load the model stored in ``model_dir`` (weights loaded safely). Called once per process."""

    @hookspec(firstresult=True)
    def input_fn(self, body: bytes, content_type: str, context: ServingContext) -> np.ndarray:
        """Decode a request body into a raw-pixel float32 array ``(N, C, H, W)`` in 0..255.

        Raise :class:`~modelcycle.core.errors.ServingError` (status 4xx) for bad input.
        """

    @hookspec(firstresult=True)
    def predict_fn(self, data: np.ndarray, model: Any, context: ServingContext) -> np.ndarray:
        """Apply the manifest's preprocessing and return class probabilities ``(N, K)``."""

    @hookspec(firstresult=True)
    def output_fn(
        self, prediction: np.ndarray, accept: str, context: ServingContext, scoring_id: str | None
    ) -> tuple[bytes, str]:
        """Encode probabilities for the client; return ``(body, content_type)``.

        ``accept`` is the negotiated media type; ``scoring_id`` identifies the request (the
        endpoint also sends it as the ``X-Scoring-Id`` header).
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
        ``status``; it is persisted and passed back to the other endpoint hooks. firstresult.
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
