"""The types plugins exchange with the core beyond hook arguments: what a framework says about
itself, and the backend objects governance and monitoring plugins return.

A leaf module: it imports nothing from the rest of modelcycle, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["SERVING_STATUSES", "FrameworkInfo", "ProcessGroup", "GovernanceBackend", "MonitoringBackend",
           "require_modules"]

#: Opens a multi-host training process group: called as ``process_group(backend, rank,
#: world_size, timeout_s)``, it returns a context manager that joins the group on enter, yields a
#: ``barrier()`` callable (returns once every rank reached it) and leaves the group on exit.
ProcessGroup = Callable[[str, int, int, float], AbstractContextManager[Callable[[], None]]]


#: ``describe_endpoint`` statuses in which an endpoint answers scoring requests: ``InService``,
#: and ``Degraded`` (it answers, but something beside scoring is impaired, e.g. its payload
#: drainer is restarting; the record's ``status_reason`` says what).
SERVING_STATUSES = frozenset({"InService", "Degraded"})


def require_modules(*names: str) -> None:
    """Raise :class:`ModuleNotFoundError` for the first of ``names`` that is not installed, without
    importing any of them.

    For a plugin that imports its heavy library lazily inside its hooks: called when the plugin
    module loads, it still makes a missing library fail the plugin's load (which names the extra
    to install) rather than its first hook call.
    """
    from importlib.util import find_spec

    for name in names:
        if find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)


@dataclass(frozen=True)
class FrameworkInfo:
    """What a framework plugin tells the core (hook ``framework_info``).

    Attributes:
        distribution: the installable distribution providing the plugin (``modelcycle``,
            ``modelcycle-example-adapter``); recorded in the manifest and pinned in the model
            archive's ``code/requirements.txt``.
        extras: extras of that distribution the framework needs (``("lightning",)``): the archive
            then requires ``modelcycle[lightning]==<version>``.
        libraries: distributions the framework uses (``("torch", "lightning")``): their installed
            versions go into the manifest and the factsheet's framework row.
        requirements: pip requirement strings a serving or training container needs beyond
            ``distribution`` when it brings the framework's main library itself (SageMaker's
            PyTorch and TensorFlow images): ``("lightning>=2.4",)``.
        training_requirements: what only a training container needs on top (``torchinfo`` for
            model summaries).
        examples: ``{example name: modelcycle.yaml text}`` that ``modelcycle init --example``
            can write; a literal ``{name}`` in the text becomes the use case's name (else the
            text's ``name:`` line is replaced).
        example_files: ``{example name: {relative path: content}}``: files beside
            ``modelcycle.yaml`` that ``init`` writes too (a model file, a data-preparing script);
            text (``str``) or bytes.
        ignored_hyperparameters: shared hyperparameters (``momentum``, ``lr_schedule``, ...) the
            framework does not use; a use case that sets one is warned at ``train``.
        process_group: for frameworks that train data-parallel over several hosts, the
            :data:`ProcessGroup` the training entry point opens around training when a job has
            2+ hosts; ``None`` (the default): single-host training only.
    """

    distribution: str
    extras: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    training_requirements: tuple[str, ...] = ()
    examples: dict[str, str] = field(default_factory=dict)
    example_files: dict[str, dict[str, str | bytes]] = field(default_factory=dict)
    ignored_hyperparameters: tuple[str, ...] = ()
    process_group: ProcessGroup | None = None

    @property
    def distributed(self) -> bool:
        """Whether the framework trains over several hosts (it has a ``process_group``)."""
        return self.process_group is not None


@runtime_checkable
class GovernanceBackend(Protocol):
    """Where governed models are mirrored beyond the local inventory (hook ``governance_backend``).

    ``governance`` is the :class:`~modelcycle.core.governance.service.Governance` of the use case
    (its ``store``, ``record``, ``config`` and the use case view); ``asset`` a model-asset row of
    the local inventory (``id``, ``name``, ``stage``, ``facts``, ``remote``...).
    """

    name: str

    def publish(self, governance: Any, asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any] | None:
        """Create or update the remote model asset (facts, deployment, tracking, stage, custom
        facts); return the remote ids to keep on the asset (``None``: nothing remote)."""

    def push_facts(self, governance: Any, asset: dict[str, Any]) -> dict[str, Any] | None:
        """Send the asset's custom facts to its remote asset, if it has one."""

    def remove(self, governance: Any, assets: list[dict[str, Any]]) -> int:
        """Delete what this backend created for ``assets``; return how many were deleted."""


@runtime_checkable
class MonitoringBackend(Protocol):
    """Where monitoring is mirrored beyond the local store (hook ``monitoring_backend``).

    ``ids`` is the dict ``subscribe`` returned (kept in the ``monitor`` stage's outputs).
    """

    name: str

    def subscribe(self, use_case: str, deployment: dict[str, Any], run_id: str | None, quality: Any) -> dict[str, Any] | None:
        """Create the remote subscription (and its quality monitor with ``quality``'s thresholds)
        for ``deployment``; return the ids to keep, or ``None`` when nothing is mirrored."""

    def forward(self, store: Any, deployment_id: str, ids: dict[str, Any], input_shape: tuple[int, ...] | None) -> dict[str, int]:
        """Send the payload and feedback records of ``store`` the remote side does not hold yet;
        a record counts as sent only once stored remotely. Return ``{"payload": n, "feedback": m}``."""

    def run_quality(self, ids: dict[str, Any]) -> dict[str, Any] | None:
        """Run the remote quality monitor; return its run id, metrics and issues."""

    def delete(self, ids: dict[str, Any]) -> int:
        """Delete the remote subscription; return 1 when it existed, else 0."""
