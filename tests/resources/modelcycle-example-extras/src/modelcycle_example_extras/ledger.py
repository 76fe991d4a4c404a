"""The ``ledger`` governance backend plugin (entry point ``ledger`` in ``modelcycle.governance``):
mirrors governed model assets into a JSON-lines file (see :mod:`modelcycle_example_extras.backend`).

``modelcycle --help`` imports every governance plugin's module (for its commands), so this one
holds only the hooks and imports the backend when a command asks for it.
"""

from __future__ import annotations

from typing import Any

from modelcycle import hookimpl


@hookimpl
def governance_settings_class() -> type:
    """``governance.ledger:`` is validated by :class:`~modelcycle_example_extras.backend.LedgerSettings`."""
    from modelcycle_example_extras.backend import LedgerSettings

    return LedgerSettings


@hookimpl
def governance_backend(settings: Any) -> Any:
    """A :class:`~modelcycle_example_extras.backend.LedgerBackend` writing to ``settings.path``."""
    from modelcycle_example_extras.backend import LedgerBackend

    return LedgerBackend(settings)
