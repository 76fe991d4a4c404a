"""modelcycle: one lifecycle for every ML model.

The facade re-exports what users and plugin authors need; heavy frameworks are never imported
here (``modelcycle --help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelcycle.core.errors import (
    ArtifactError,
    ConfigError,
    DatasetIntegrityError,
    DatasetNotFoundError,
    EndpointError,
    ModelcycleError,
    PluginContractError,
    PluginNotFoundError,
    ServingError,
    StageError,
    StateLockedError,
)
from modelcycle.core.markers import hookimpl, hookspec

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.config import UseCaseConfig, load_config
    from modelcycle.core.lifecycle import UseCase

__all__ = [
    "hookimpl",
    "hookspec",
    "UseCase",
    "UseCaseConfig",
    "load_config",
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

_LAZY = {
    "UseCase": "modelcycle.core.lifecycle",
    "UseCaseConfig": "modelcycle.core.config",
    "load_config": "modelcycle.core.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelcycle' has no attribute '{name}'")
