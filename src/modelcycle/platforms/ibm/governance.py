"""The ``ibm`` governance backend plugin (entry point in ``modelcycle.governance``): IBM AI
Factsheets through ``ibm-aigov-facts-client``, implemented in
:mod:`modelcycle.platforms.ibm.factsheets`.

``modelcycle --help`` imports this module for its hooks, so it imports nothing at module level.
"""

from __future__ import annotations

from typing import Any

from modelcycle.core.markers import hookimpl


@hookimpl
def governance_settings_class() -> type:
    """The settings of the ``ibm`` backend (:class:`~.factsheets.FactsheetsSettings`)."""
    from modelcycle.platforms.ibm.factsheets import FactsheetsSettings

    return FactsheetsSettings


@hookimpl
def governance_backend(settings: Any) -> Any:
    """The IBM AI Factsheets backend for ``settings``."""
    from modelcycle.platforms.ibm.factsheets import IBMFactsheetsBackend

    return IBMFactsheetsBackend(settings)
