"""One error hierarchy for modelcycle.

Every message says what failed, names the plugin, hook, stage, key or file involved, and how to
fix it (or the valid choices). Errors that can reach an HTTP client carry a ``status_code``.
"""

from __future__ import annotations

__all__ = [
    "ModelcycleError",
    "ConfigError",
    "PluginNotFoundError",
    "PluginContractError",
    "StageError",
    "StateLockedError",
    "DatasetNotFoundError",
    "DatasetIntegrityError",
    "ArtifactError",
    "EndpointError",
    "ServingError",
]


class ModelcycleError(Exception):
    """Base class of every error modelcycle raises on purpose: something the user can fix.

    The command line prints its message (no traceback) and exits with ``exit_code``.
    """

    #: The command line's exit code for this error (2: user error).
    exit_code: int = 2


class ConfigError(ModelcycleError):
    """A use-case configuration is missing, malformed or names an invalid value."""


class PluginNotFoundError(ModelcycleError):
    """A framework or platform name matches no installed plugin (the message lists them)."""


class PluginContractError(ModelcycleError):
    """A plugin breaks the hook contract: missing hooks, no answer, or a wrong result type."""


class StageError(ModelcycleError):
    """A lifecycle stage cannot run (missing prerequisite) or failed while running."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"stage '{stage}': {message}")
        self.stage = stage


class StateLockedError(ModelcycleError):
    """Another process holds the use case's lock."""


class DatasetNotFoundError(ModelcycleError):
    """A dataset's files are nowhere on the look-up path and could not be downloaded."""


class DatasetIntegrityError(ModelcycleError):
    """A dataset file exists but its checksum or format is wrong."""


class ArtifactError(ModelcycleError):
    """A model artifact is missing, corrupt, unsafe, or made by another plugin."""


class EndpointError(ModelcycleError):
    """An endpoint could not be started, reached, or stopped."""


class ServingError(ModelcycleError):
    """A scoring request is invalid; ``status_code`` is the HTTP status to answer with."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code
