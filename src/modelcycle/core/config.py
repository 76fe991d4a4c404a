"""The use case's ``modelcycle.yaml``: typed, strict, overridable.

Precedence, lowest first: the file, ``MODELCYCLE_<SECTION>[__<KEY>...]`` environment variables
(e.g. ``MODELCYCLE_HYPERPARAMETERS__EPOCHS=3``), then ``--set section.key=value`` overrides.
Values given as text are parsed as YAML scalars (``3`` is an int, ``true`` a bool). Every
section forbids unknown keys; errors name the key's path and the allowed keys or values. The
``model:`` section is validated by the selected framework plugin's own config class.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelcycle.core.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "UseCaseConfig",
    "Hyperparameters",
    "DataConfig",
    "TrainingConfig",
    "ServingConfig",
    "load_config",
    "parse_overrides",
    "validate_section",
]

CONFIG_FILE = "modelcycle.yaml"
_ENV_PREFIX = "MODELCYCLE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the data comes from; ``train_limit``/``test_limit`` take the first N records."""

    dataset: Literal["mnist", "fashion-mnist", "cifar10"] = "mnist"
    path: str | None = None
    train_limit: int | None = Field(default=None, gt=0)
    test_limit: int | None = Field(default=None, gt=0)


class Hyperparameters(_Section):
    """Training hyperparameters shared by every framework (the seeds' argparse options)."""

    epochs: int = Field(default=2, gt=0)
    batch_size: int = Field(default=64, gt=0)
    test_batch_size: int = Field(default=1000, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = Field(default=0.005, gt=0)
    lr_schedule: Literal["onecycle", "constant"] = "onecycle"
    momentum: float = Field(default=0.9, ge=0)
    beta_1: float = Field(default=0.9, gt=0, lt=1)
    beta_2: float = Field(default=0.999, gt=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = 1
    log_interval: int = Field(default=100, gt=0)


class TrainingConfig(_Section):
    platform: str = "local"


class ServingConfig(_Section):
    """Endpoint settings. ``token`` (or ``MODELCYCLE_ENDPOINT_TOKEN``) turns on bearer auth."""

    platform: str = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    token: SecretStr | None = None
    threads: int = Field(default=1, gt=0, description="intra-op threads of the model server")
    max_body_mb: float = Field(default=6.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    startup_timeout_s: float = Field(default=120.0, gt=0)


class TrackingConfig(_Section):
    """MLflow tracking: the embedded store under ``.modelcycle/`` unless ``uri`` names another."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = Field(default=None, description="default: the use case's name")


class GovernanceConfig(_Section):
    backend: str = "local"


_QualityMetric = Literal[
    "accuracy", "weighted_precision", "weighted_recall", "weighted_f_measure",
    "weighted_true_positive_rate", "weighted_false_positive_rate", "log_loss",
]
_DriftMetric = Literal["prediction_drift", "confidence_drift", "mean_intensity_drift", "ink_fraction_drift"]


class _Threshold(_Section):
    """``{metric_id, type: lower_limit|upper_limit, value}`` — OpenScale's threshold shape."""

    type: Literal["lower_limit", "upper_limit"]
    value: float

    @classmethod
    def _refuse_misplaced_value(cls, data: Any) -> Any:
        if isinstance(data, dict) and "value" not in data:
            for key in ("lower_limit", "upper_limit"):
                if key in data:
                    raise ValueError(
                        f"the limit goes under the key 'value' (type: {key}, value: {data[key]}); "
                        f"'{key}: {data[key]}' is the mlmonitor spelling that OpenScale silently ignores"
                    )
        return data


class QualityThreshold(_Threshold):
    metric_id: _QualityMetric

    @model_validator(mode="before")
    @classmethod
    def _value_key(cls, data: Any) -> Any:
        return cls._refuse_misplaced_value(data)


class DriftThreshold(_Threshold):
    metric_id: _DriftMetric
    type: Literal["lower_limit", "upper_limit"] = "upper_limit"

    @model_validator(mode="before")
    @classmethod
    def _value_key(cls, data: Any) -> Any:
        return cls._refuse_misplaced_value(data)


def _unique_thresholds(thresholds: list[Any]) -> list[Any]:
    seen = set()
    for threshold in thresholds:
        key = (threshold.metric_id, threshold.type)
        if key in seen:
            raise ValueError(f"two thresholds for {threshold.metric_id} {threshold.type}; keep one")
        seen.add(key)
    return thresholds


class QualityMonitorConfig(_Section):
    """Quality over feedback records. ``thresholds`` override the defaults per (metric_id, type);
    the default is OpenScale's: accuracy lower_limit 0.8."""

    enabled: bool = True
    min_feedback_data_size: int = Field(default=50, gt=0)
    max_records: int | None = Field(default=None, gt=0, description="the most recent N feedback records; all if unset")
    thresholds: list[QualityThreshold] = Field(default_factory=list)

    @field_validator("thresholds")
    @classmethod
    def _one_per_metric(cls, value: list[QualityThreshold]) -> list[QualityThreshold]:
        return _unique_thresholds(value)


class DriftMonitorConfig(_Section):
    """Drift of the most recent payload vs the baseline. ``thresholds`` override the defaults per
    (metric_id, type): upper_limit 0.1 on prediction/confidence drift, 0.2 on the input KS statistics."""

    enabled: bool = True
    min_samples: int = Field(default=100, gt=0)
    max_samples: int = Field(default=10_000, gt=0, description="size of the recent payload window")
    baseline_samples: int = Field(default=2000, gt=0, description="held-out test images scored for the baseline")
    thresholds: list[DriftThreshold] = Field(default_factory=list)

    @field_validator("thresholds")
    @classmethod
    def _one_per_metric(cls, value: list[DriftThreshold]) -> list[DriftThreshold]:
        return _unique_thresholds(value)


class PayloadLoggingConfig(_Section):
    """The endpoint's payload log: journaled before each 200, drained into the store in batches."""

    enabled: bool = True
    sampling_percentage: float = Field(default=100.0, ge=0, le=100)
    fsync: bool = Field(default=False, description="fsync the journal per request: survives power loss, costs throughput")
    flush_interval_ms: int = Field(default=200, gt=0)
    batch_records: int = Field(default=500, gt=0)


class MonitoringConfig(_Section):
    """Monitoring: the SQL store (``database_url``, else ``MODELCYCLE_DATABASE_URL``, else SQLite
    ``.modelcycle/monitoring.db``), payload logging, and the quality and drift monitors."""

    backend: str = "local"
    database_url: SecretStr | None = None
    payload: PayloadLoggingConfig = Field(default_factory=PayloadLoggingConfig)
    quality: QualityMonitorConfig = Field(default_factory=QualityMonitorConfig)
    drift: DriftMonitorConfig = Field(default_factory=DriftMonitorConfig)


class UseCaseConfig(_Section):
    """The whole ``modelcycle.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    description: str = ""
    framework: str = "pytorch"
    capture: Literal["autolog", "manual"] = "manual"
    model: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    disable_plugins: list[str] = Field(default_factory=list)

    @field_validator("model", mode="before")
    @classmethod
    def _model_mapping(cls, value: Any) -> Any:
        return {} if value is None else value

    def endpoint_token(self) -> str | None:
        """The bearer token endpoints require, from config or ``MODELCYCLE_ENDPOINT_TOKEN``."""
        if self.serving.token is not None:
            return self.serving.token.get_secret_value()
        return os.environ.get("MODELCYCLE_ENDPOINT_TOKEN") or None


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        current = field.annotation
    return sorted(current.model_fields)


def _format_errors(exc: ValidationError, model: type[BaseModel], prefix: str, source: str) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path = ".".join([prefix, *map(str, loc)] if prefix else map(str, loc)) or "(top level)"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {path}: unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        else:
            got = error.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  {path}: {error['msg']}{shown}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


def validate_section(model: type[BaseModel], data: Mapping[str, Any], prefix: str, source: str) -> BaseModel:
    """Validate one section (e.g. ``model:`` with a plugin's class); errors carry ``prefix``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, model, prefix, source)) from None


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_path(data: dict[str, Any], path: list[str], value: Any, origin: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{part}' is a value, not a section, so '{'.'.join(path)}' cannot be set")
        node = child
    node[path[-1]] = value


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=c", ...]`` into a ``{"a.b": parsed value}`` mapping.

    Raises:
        ConfigError: an item has no ``=`` or an empty key.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. hyperparameters.epochs=3), got '{pair}'")
        overrides[key.strip()] = _scalar(value)
    return overrides


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    sections = set(UseCaseConfig.model_fields)
    found: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(_ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(_ENV_PREFIX):].split("__")]
        if path[0] in sections:  # other MODELCYCLE_* names (DATA_DIR, DEBUG, ...) are settings
            found[".".join(path)] = _scalar(value)
    return found


def load_config(
    directory: str | os.PathLike[str] = ".",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> UseCaseConfig:
    """Load ``directory/modelcycle.yaml`` with environment and explicit overrides applied.

    Raises:
        ConfigError: the file is missing or not YAML, or a key or value is invalid (every
            problem is listed with its key path).
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"no {CONFIG_FILE} in {Path(directory).resolve()}: create one with "
            "'modelcycle init DIR --framework pytorch --example mnist' or pass -C DIR"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (name, framework, ...)")
    merged = {**_env_overrides(os.environ if environ is None else environ), **(overrides or {})}
    for key, value in merged.items():
        origin = "override" if overrides and key in overrides else "environment"
        _set_path(data, key.split("."), value, f"{origin} '{key}'")
    source = str(path) + (" (with overrides)" if merged else "")
    return validate_section(UseCaseConfig, data, "", source)  # type: ignore[return-value]
