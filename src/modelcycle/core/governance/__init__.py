"""Governance: the model inventory, lifecycle stages with an audit trail, custom facts, factsheets.

``Governance(use_case)`` is the entry point; the ``UseCase`` facade (``govern``, ``inventory``,
``facts``, ``set_fact``, ``factsheet``, ``cleanup``) calls into it. Backends that mirror governed
models elsewhere are plugins (:mod:`modelcycle.core.governance.backends`). Nothing heavy is
imported here: SQLAlchemy, MLflow and matplotlib load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Governance", "STAGES", "on_cleanup"]

from modelcycle.core.governance.stages import STAGES

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.governance.service import Governance
    from modelcycle.core.view import UseCaseView


def __getattr__(name: str) -> Any:
    if name == "Governance":
        from modelcycle.core.governance.service import Governance

        return Governance
    raise AttributeError(name)


def on_cleanup(use_case: UseCaseView, remove: bool = False) -> dict[str, int]:
    """See :func:`modelcycle.core.governance.service.on_cleanup`."""
    from modelcycle.core.governance.service import on_cleanup as run

    return run(use_case, remove)
