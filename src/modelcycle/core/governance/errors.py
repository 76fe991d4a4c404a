"""Errors of governance (all are ``ModelcycleError``, so the CLI prints them without a traceback)."""

from __future__ import annotations

from modelcycle.core.errors import ModelcycleError

__all__ = ["GovernanceError", "TransitionError", "AssetNotFoundError", "BackendError"]


class GovernanceError(ModelcycleError):
    """The governance store or one of its records is unusable."""


class TransitionError(GovernanceError):
    """A lifecycle stage move is not allowed (the message lists the allowed next stages)."""


class AssetNotFoundError(GovernanceError):
    """No model asset matches the given run id (the message lists the known ones)."""


class BackendError(GovernanceError):
    """The remote governance service (IBM AI Factsheets) refused a request or is unreachable."""
