"""The ``local`` governance backend (entry point ``local`` in ``modelcycle.governance``).

The local SQL inventory is always the record, so this backend mirrors nothing: governed models,
stage moves and custom facts live in the governance store only, and ``cleanup --governance``
deletes nothing beyond the records the core purges. It takes no settings (no
``governance_settings_class``), so any key under ``governance:`` besides ``backend`` and
``database_url`` is refused when it is selected.
"""

from __future__ import annotations

from typing import Any

from modelcycle.core.markers import hookimpl

__all__ = ["LocalGovernanceBackend", "governance_backend"]


class LocalGovernanceBackend:
    """The local store alone: nothing to mirror (a :class:`~modelcycle.core.plugin_types.GovernanceBackend`)."""

    name = "local"

    def publish(self, governance: Any, asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any] | None:
        """Nothing is mirrored: no remote ids."""
        return None

    def push_facts(self, governance: Any, asset: dict[str, Any]) -> dict[str, Any] | None:
        """Custom facts stay in the local store."""
        return None

    def remove(self, governance: Any, assets: list[dict[str, Any]]) -> int:
        """Nothing remote to delete; the count is of the local assets the core purges next."""
        return len(assets)


@hookimpl
def governance_backend(settings: Any) -> LocalGovernanceBackend:
    """The local backend (``settings`` is always ``None``: it takes none)."""
    return LocalGovernanceBackend()
