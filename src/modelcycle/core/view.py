"""The narrow, typed view of a use case that the services (experiments, governance, monitoring)
work on, instead of the whole :class:`~modelcycle.core.lifecycle.UseCase`.

A leaf module: it names its types for type checkers only, so any service may import it without
importing the lifecycle (no import cycle between the facade and the services it delegates to).
:class:`~modelcycle.core.lifecycle.UseCase` satisfies it structurally.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    from modelcycle.core.config import UseCaseConfig
    from modelcycle.core.registry import PluginRegistry
    from modelcycle.core.state import StateStore

__all__ = ["UseCaseView"]


class UseCaseView(Protocol):
    """What a service may read and call on a use case.

    Attributes:
        directory: the use case directory (holding ``modelcycle.yaml``).
        work_dir: its ``.modelcycle`` directory (state, runs, stores, endpoints).
        config: the validated configuration (overrides applied).
        store: the persisted lifecycle state (``store.read()``; writes only under ``store.lock``).
        registry: the plugin registry (framework, platforms and backends load on demand).
    """

    directory: Path
    work_dir: Path
    config: UseCaseConfig
    store: StateStore

    @property
    def registry(self) -> PluginRegistry: ...

    def endpoint(self) -> dict[str, Any] | None:
        """The deployed endpoint's record with its live ``status``, or ``None``."""

    def describe_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        """``endpoint`` (a stored record) refreshed with its live ``status`` by its platform."""
