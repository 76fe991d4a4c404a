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
    from modelcycle.core.artifacts import InputSchema, Manifest, Preprocessing
    from modelcycle.core.config import Hyperparameters, UseCaseConfig, load_config
    from modelcycle.core.datasets import Dataset, Split
    from modelcycle.core.lifecycle import ScoreResult, UseCase
    from modelcycle.core.plugin_types import FrameworkInfo, GovernanceBackend, MonitoringBackend
    from modelcycle.core.serving.context import ServingContext
    from modelcycle.core.training import TrainingContext, TrainingReporter, TrainingResult
    from modelcycle.core.view import UseCaseView

__all__ = [
    "hookimpl",
    "hookspec",
    "UseCase",
    "UseCaseConfig",
    "load_config",
    "ScoreResult",
    # what a plugin author touches
    "TrainingContext",
    "TrainingReporter",
    "TrainingResult",
    "Hyperparameters",
    "Dataset",
    "Split",
    "ServingContext",
    "Manifest",
    "InputSchema",
    "Preprocessing",
    "FrameworkInfo",
    "GovernanceBackend",
    "MonitoringBackend",
    "UseCaseView",
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
    "ScoreResult": "modelcycle.core.lifecycle",
    "UseCaseConfig": "modelcycle.core.config",
    "Hyperparameters": "modelcycle.core.config",
    "load_config": "modelcycle.core.config",
    "TrainingContext": "modelcycle.core.training",
    "TrainingReporter": "modelcycle.core.training",
    "TrainingResult": "modelcycle.core.training",
    "Dataset": "modelcycle.core.datasets",
    "Split": "modelcycle.core.datasets",
    "ServingContext": "modelcycle.core.serving.context",
    "Manifest": "modelcycle.core.artifacts",
    "InputSchema": "modelcycle.core.artifacts",
    "Preprocessing": "modelcycle.core.artifacts",
    "FrameworkInfo": "modelcycle.core.plugin_types",
    "GovernanceBackend": "modelcycle.core.plugin_types",
    "MonitoringBackend": "modelcycle.core.plugin_types",
    "UseCaseView": "modelcycle.core.view",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelcycle' has no attribute '{name}'")
