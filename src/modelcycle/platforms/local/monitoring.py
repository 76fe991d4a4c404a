"""The ``local`` monitoring backend (entry point ``local`` in ``modelcycle.monitoring``): the
default, ``monitoring.backend: local``.

The local store, payload logging and the quality and drift monitors always run in modelcycle
itself; this backend mirrors nothing beyond them. It has no settings section.
"""

from __future__ import annotations

from typing import Any

from modelcycle.core.markers import hookimpl

__all__ = ["LocalMonitoring", "monitoring_backend"]


class LocalMonitoring:
    """A :class:`~modelcycle.core.plugin_types.MonitoringBackend` that keeps everything local."""

    name = "local"

    def subscribe(self, use_case: str, deployment: dict[str, Any], run_id: str | None, quality: Any) -> dict[str, Any] | None:
        """Nothing to create remotely: ``None``."""
        return None

    def forward(self, store: Any, deployment_id: str, ids: dict[str, Any], input_shape: tuple[int, ...] | None) -> dict[str, int]:
        """Nothing is sent anywhere."""
        return {"payload": 0, "feedback": 0}

    def run_quality(self, ids: dict[str, Any]) -> dict[str, Any] | None:
        """No remote quality monitor: ``None``."""
        return None

    def delete(self, ids: dict[str, Any]) -> int:
        """Nothing remote to delete: 0."""
        return 0


@hookimpl
def monitoring_backend(settings: Any) -> LocalMonitoring:
    """The local backend (``settings`` is ``None``: it takes none)."""
    return LocalMonitoring()
