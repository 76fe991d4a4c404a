"""The use case's ``modelcycle.yaml``: typed, strict, overridable.

Precedence, lowest first: the file, ``MODELCYCLE_<SECTION>[__<KEY>...]`` environment variables
(e.g. ``MODELCYCLE_HYPERPARAMETERS__EPOCHS=3``), then ``--set section.key=value`` overrides.
Values given as text are parsed as YAML scalars (``3`` is an int, ``true`` a bool). Every
section forbids unknown keys; errors name the key's path and the allowed keys or values. The
``model:`` section is validated by the selected framework plugin's own config class.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelcycle.core.errors import ConfigError
from modelcycle.core.textfiles import read_utf8

__all__ = [
    "CONFIG_FILE",
    "UseCaseConfig",
    "Hyperparameters",
    "DataConfig",
    "TrainingConfig",
    "ServingConfig",
    "load_config",
    "parse_overrides",
    "script_source_dir",
    "validate_section",
]

CONFIG_FILE = "modelcycle.yaml"
_ENV_PREFIX = "MODELCYCLE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the data comes from: ``dataset`` names an installed dataset plugin (entry-point group
    ``modelcycle.datasets``; built-ins ``mnist``, ``fashion-mnist``, ``cifar10``, ``imagefolder``,
    ``npz``, ``loader``; an unknown name fails when the data is loaded, listing the installed
    ones), ``path`` the files' location (relative to the use case directory; else the plugin's
    own look-up), ``options`` the plugin's own settings (it validates them).
    ``train_limit``/``test_limit`` take the first N records."""

    dataset: str = Field(default="mnist", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
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


_INSTANCE_TYPE = r"^(ml\.[a-z0-9-]+\.[a-z0-9-]+|local)$"

#: a script's hyperparameter value (passed as ``--name value``, the way SageMaker passes them)
HyperparameterValue = str | int | float | bool


class MetricDefinition(BaseModel):
    """SageMaker's metric definition: ``Regex``'s first group, found in the training script's
    output, is the value of the metric ``Name`` (one MLflow step per match)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(alias="Name", min_length=1, pattern=r"^[A-Za-z0-9_.:/ -]+$")
    regex: str = Field(alias="Regex", min_length=1)

    @field_validator("regex")
    @classmethod
    def _one_group(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc}); e.g. 'Accuracy: ([0-9.]+)'") from None
        if compiled.groups < 1:
            raise ValueError("needs a group capturing the value, e.g. 'Accuracy: ([0-9.]+)'")
        return value


class TrainingConfig(_Section):
    """Where and how the model trains.

    ``platform: local`` trains on this machine, ``mode: in_process`` in the calling process or
    ``mode: container`` through the SageMaker container contract (the training entry point in
    ``instance_count`` subprocesses, hosts ``algo-1``..., an ``/opt/ml``-like tree under
    ``.modelcycle/jobs/``). ``platform: sagemaker`` runs a SageMaker training job on
    ``instance_count`` x ``instance_type``. ``backend: gloo`` turns on torch.distributed data
    parallelism over the hosts (required when ``instance_count`` > 1).

    ``role``, ``bucket`` and ``region`` fall back to ``MODELCYCLE_SAGEMAKER_ROLE``,
    ``MODELCYCLE_SAGEMAKER_BUCKET`` and ``MODELCYCLE_SAGEMAKER_REGION``. Credentials never live in
    config: boto3's own chain (environment, profile, instance role) supplies them.
    """

    platform: str = "local"
    mode: Literal["in_process", "container"] = "in_process"
    instance_count: int = Field(default=1, ge=1, le=64)
    instance_type: str = Field(default="ml.c5.xlarge", pattern=_INSTANCE_TYPE)
    backend: Literal["gloo"] | None = None
    role: str | None = Field(default=None, description="IAM role (ARN or name) SageMaker assumes")
    bucket: str | None = Field(default=None, description="S3 bucket; default sagemaker-<region>-<account>")
    region: str | None = None
    prefix: str | None = Field(default=None, description="S3 key prefix; default modelcycle/<name>")
    workflow_role: str | None = Field(
        default=None, description="IAM role Step Functions assumes to run 'modelcycle pipeline' (trusts states.amazonaws.com)"
    )
    base_job_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,37}$")
    framework_version: str | None = Field(default=None, description="container framework version, e.g. 2.6")
    py_version: str | None = Field(default=None, pattern=r"^py3\d+$")
    volume_size: int = Field(default=30, ge=1, description="GB of storage per training instance")
    max_run: int = Field(default=86_400, gt=0, description="seconds before the job is stopped")
    logs: bool = Field(default=True, description="stream the job's logs while waiting")
    requirements: list[str] | None = Field(
        default=None, description="lines of the source dir's requirements.txt; default: modelcycle==<version>"
    )
    # -- script mode: the user's own SageMaker training script ---------------------------------
    entry_point: str | None = Field(
        default=None, description="script mode: the user's training script (SageMaker's entry_point), in source_dir"
    )
    source_dir: str | None = Field(
        default=None, description="script mode: the directory holding entry_point; default the use case directory"
    )
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=dict, description="script mode: passed to entry_point as --name value arguments"
    )
    metric_definitions: list[MetricDefinition] = Field(
        default_factory=list, description="script mode: [{Name, Regex}] turning the script's output into metrics"
    )

    @property
    def script_mode(self) -> bool:
        """Whether the user's own ``entry_point`` trains (rather than the framework plugin)."""
        return self.entry_point is not None

    @model_validator(mode="after")
    def _distributed_needs_backend(self) -> TrainingConfig:
        # a user's script opens its own process group (e.g. from a --backend hyperparameter)
        if self.instance_count > 1 and self.backend is None and not self.script_mode:
            raise ValueError(
                f"instance_count {self.instance_count} needs a distributed backend: set "
                "training.backend: gloo (or instance_count: 1)"
            )
        return self


class ServingVariant(_Section):
    """One SageMaker production variant: ``weight`` its share of traffic (relative to the other
    variants' weights); ``instance_type``/``instance_count`` default to the ``serving:`` section's;
    ``run`` serves that tracked run's model (a run id prefix) instead of the deployed one."""

    name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    weight: float = Field(ge=0)
    instance_type: str | None = Field(default=None, pattern=_INSTANCE_TYPE)
    instance_count: int | None = Field(default=None, ge=1)
    run: str | None = Field(default=None, pattern=r"^[0-9a-f]{4,32}$")


class DataCaptureSettings(_Section):
    """SageMaker Data Capture of a SageMaker endpoint (``serving.data_capture``): the requests and
    answers it captures into S3, which ``log-payload``/``evaluate`` bring into the monitoring
    store. ``sampling_percentage`` of the requests are captured; ``destination`` is an
    ``s3://bucket/prefix`` (default ``s3://<bucket>/<prefix>/datacapture``)."""

    enabled: bool = True
    sampling_percentage: int = Field(default=100, ge=0, le=100)
    destination: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


class ServingConfig(_Section):
    """Endpoint settings. ``token`` (or ``MODELCYCLE_ENDPOINT_TOKEN``) turns on bearer auth.

    ``host`` ... ``startup_timeout_s`` apply to local endpoints; ``instance_type`` ...
    ``deploy_timeout_s`` to SageMaker endpoints, whose ``role``/``bucket``/``region``/``prefix``
    fall back to the ``training:`` section, then to ``MODELCYCLE_SAGEMAKER_*``.
    """

    platform: str = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    token: SecretStr | None = None
    threads: int = Field(default=1, gt=0, description="intra-op threads of the model server")
    max_body_mb: float = Field(default=6.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    startup_timeout_s: float = Field(default=120.0, gt=0)
    instance_type: str = Field(default="ml.c5.xlarge", pattern=_INSTANCE_TYPE)
    instance_count: int = Field(default=1, ge=1)
    role: str | None = None
    bucket: str | None = None
    region: str | None = None
    prefix: str | None = None
    framework_version: str | None = None
    py_version: str | None = Field(default=None, pattern=r"^py3\d+$")
    deploy_timeout_s: float = Field(default=1800.0, gt=0, description="wait for InService at most this long")
    entry_point: str | None = Field(
        default=None,
        description="script mode: the user's inference handlers (model_fn, input_fn, predict_fn, output_fn), "
        "in training.source_dir",
    )
    variants: list[ServingVariant] = Field(
        default_factory=list,
        description="SageMaker production variants splitting traffic by weight (canaries); default: one, AllTraffic",
    )
    data_capture: DataCaptureSettings = Field(
        default_factory=DataCaptureSettings,
        description="SageMaker endpoints: Data Capture of requests and answers into S3 (payload monitoring)",
    )

    @field_validator("variants")
    @classmethod
    def _variants_split_traffic(cls, value: list[ServingVariant]) -> list[ServingVariant]:
        names = [v.name for v in value]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if value and not any(v.weight > 0 for v in value):
            raise ValueError("at least one variant needs a weight > 0 (the weights split the traffic)")
        return value

    #: the shortest bearer token an endpoint accepts
    MIN_TOKEN_LENGTH: ClassVar[int] = 16

    @model_validator(mode="before")
    @classmethod
    def _token_is_long_enough(cls, data: Any) -> Any:
        # a model-level check: its error shows the section, never the token's value
        token = data.get("token") if isinstance(data, dict) else None
        if isinstance(token, SecretStr):
            token = token.get_secret_value()
        if isinstance(token, str):
            cls.check_token(token, "serving.token")
        return data

    @classmethod
    def check_token(cls, token: str, source: str) -> str:
        """``token`` when it is fit to guard an endpoint: not blank, at least
        :attr:`MIN_TOKEN_LENGTH` characters, no surrounding whitespace (the value is never echoed).

        Raises:
            ValueError: naming ``source`` (``serving.token`` or ``MODELCYCLE_ENDPOINT_TOKEN``) and
                how to make a good token.
        """
        fix = ("use a random one of at least %d characters, e.g. python -c \"import secrets; "
               "print(secrets.token_urlsafe(24))\"" % cls.MIN_TOKEN_LENGTH)
        if not token.strip():
            raise ValueError(f"{source} is blank; {fix}")
        if token != token.strip():
            raise ValueError(f"{source} starts or ends with whitespace; {fix}")
        if len(token) < cls.MIN_TOKEN_LENGTH:
            raise ValueError(f"{source} is {len(token)} characters long, too short to guard an endpoint; {fix}")
        return token


class TrackingConfig(_Section):
    """MLflow tracking: the embedded store under ``.modelcycle/`` unless ``uri`` names another."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = Field(default=None, description="default: the use case's name")
    log_model: bool = Field(
        default=True,
        description="log the trained model as an MLflow model and register it under the use case's name",
    )


class GovernanceConfig(BaseModel):
    """Governance: the model inventory, lifecycle stages (develop → test → validate → operate) and
    factsheets, always kept in the SQL store (``database_url``, else ``MODELCYCLE_DATABASE_URL``,
    else SQLite ``.modelcycle/governance.db``).

    ``backend`` names the governance plugin (entry-point group ``modelcycle.governance``) that
    mirrors governed models elsewhere: ``local`` (the default) mirrors nothing, ``ibm`` mirrors
    them into IBM AI Factsheets. Every other key of this section is a setting of that backend,
    written either flat (``governance: {backend: ibm, catalog_id: ...}``) or under the backend's
    own name (``governance: {backend: ibm, ibm: {catalog_id: ...}}``). They are validated by the
    backend's settings class when the backend is loaded (see
    :func:`modelcycle.core.governance.backends.load_backend`), so errors still name
    ``governance.<key>``."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    backend: str = Field(default="local", description="the governance backend plugin ('modelcycle plugins' lists them)")
    database_url: SecretStr | None = None

    def backend_keys(self) -> dict[str, Any]:
        """Every key of this section that is not ``backend`` or ``database_url``, as written
        (flat settings, and ``<backend name>:`` mappings); validated by the backend, not here."""
        return dict(self.model_extra or {})


_QualityMetric = Literal[
    "accuracy", "weighted_precision", "weighted_recall", "weighted_f_measure",
    "weighted_true_positive_rate", "weighted_false_positive_rate", "log_loss",
]
_DriftMetric = Literal["prediction_drift", "confidence_drift", "mean_intensity_drift", "ink_fraction_drift",
                       "feature_drift"]


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
    """Drift of a window of recent payload vs the baseline. ``thresholds`` override the defaults per
    (metric_id, type): upper_limit 0.15 on prediction drift (Jensen-Shannon), 0.1 on confidence drift
    (total variation), 0.25 on the input statistics (KS).

    ``window`` picks the records judged: ``since_last`` (the default) those scored since the
    previous drift evaluation, ``last_n`` the most recent ``last_n``, ``duration`` those scored in
    the last ``duration_s`` seconds. ``since_last`` and ``duration`` reach back to the most recent
    ``min_samples`` records when they hold fewer; every window holds at most ``max_samples``."""

    enabled: bool = True
    # 100 clean records drift by chance: their prediction_drift averages 0.13 against the 0.15 limit
    # and passes it in about one window in four; from 300 on it stays under 0.08
    min_samples: int = Field(default=500, gt=0, description="the fewest records a window is judged on")
    max_samples: int = Field(default=10_000, gt=0, description="the most records any window holds")
    window: Literal["since_last", "last_n", "duration"] = "since_last"
    last_n: int = Field(default=1000, gt=0, description="records in a last_n window")
    duration_s: float = Field(default=3600.0, gt=0, description="seconds of traffic in a duration window")
    baseline_samples: int = Field(default=2000, gt=0, description="held-out test images scored for the baseline")
    thresholds: list[DriftThreshold] = Field(default_factory=list)

    @field_validator("thresholds")
    @classmethod
    def _one_per_metric(cls, value: list[DriftThreshold]) -> list[DriftThreshold]:
        return _unique_thresholds(value)

    @model_validator(mode="after")
    def _sizes_agree(self) -> DriftMonitorConfig:
        if self.min_samples > self.max_samples:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds max_samples ({self.max_samples}): no window "
                             "could ever be judged; lower min_samples or raise max_samples")
        if self.window == "last_n" and not self.min_samples <= self.last_n <= self.max_samples:
            raise ValueError(f"last_n ({self.last_n}) must lie between min_samples ({self.min_samples}) and "
                             f"max_samples ({self.max_samples}) for window: last_n")
        return self


class PayloadLoggingConfig(_Section):
    """The endpoint's payload log: journaled before each 200, drained into the store in batches."""

    enabled: bool = True
    sampling_percentage: float = Field(default=100.0, ge=0, le=100)
    fsync: bool = Field(default=False, description="fsync the journal per request: survives power loss, costs throughput")
    flush_interval_ms: int = Field(default=1000, gt=0, description="drain at least this often")
    batch_records: int = Field(default=1000, gt=0, description="drain sooner once this many records wait")


class MonitoringConfig(_Section):
    """Monitoring: the SQL store (``database_url``, else ``MODELCYCLE_DATABASE_URL``, else SQLite
    ``.modelcycle/monitoring.db``), payload logging, and the quality and drift monitors.

    ``backend`` names the installed monitoring plugin (entry-point group
    ``modelcycle.monitoring``) that mirrors all of that elsewhere: ``local`` (the default) mirrors
    nothing; ``openscale`` mirrors the subscription, payload and feedback records and the quality
    monitor into Watson OpenScale. A backend's settings are the section named after it
    (``monitoring: {backend: openscale, openscale: {...}}``), validated by that plugin when it is
    loaded; here any other key must be such a mapping (:meth:`backend_settings` reads it).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    backend: str = Field(default="local", min_length=1, description="the monitoring plugin mirroring the local monitoring")
    database_url: SecretStr | None = None
    payload: PayloadLoggingConfig = Field(default_factory=PayloadLoggingConfig)
    quality: QualityMonitorConfig = Field(default_factory=QualityMonitorConfig)
    drift: DriftMonitorConfig = Field(default_factory=DriftMonitorConfig)

    @model_validator(mode="before")
    @classmethod
    def _sections_are_mappings(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key, value in data.items():
                if key not in cls.model_fields and not isinstance(value, Mapping):
                    raise ValueError(
                        f"'{key}' is no monitoring setting (allowed keys: {', '.join(sorted(cls.model_fields))}); "
                        f"a monitoring backend's settings are a mapping under its name (monitoring.{key}: {{...}})")
        return data

    def backend_sections(self) -> dict[str, dict[str, Any]]:
        """The backends' settings sections given (``{backend name: mapping}``), unvalidated."""
        return {key: dict(value) for key, value in (self.model_extra or {}).items()}

    def backend_settings(self, name: str) -> dict[str, Any]:
        """The settings section of backend ``name`` (``monitoring.<name>:``), empty when absent."""
        return self.backend_sections().get(name, {})


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


def script_source_dir(config: UseCaseConfig, directory: str | os.PathLike[str]) -> Path:
    """Script mode: the directory holding ``training.entry_point`` — ``training.source_dir``
    relative to the use case ``directory`` (absolute paths as given), default ``directory``."""
    base = Path(directory)
    given = config.training.source_dir
    return (base / Path(given).expanduser()).resolve() if given else base.resolve()


def check_script_paths(config: UseCaseConfig, directory: Path, source: str) -> None:
    """Script mode: ``training.source_dir`` must be a directory and ``training.entry_point`` a
    file inside it.

    Raises:
        ConfigError: naming the key, the path looked at and the fix.
    """
    source_dir = script_source_dir(config, directory)
    if not source_dir.is_dir():
        raise ConfigError(
            f"invalid configuration in {source}: training.source_dir {config.training.source_dir!r} is not a "
            f"directory ({source_dir}); point it at the directory holding your training script, relative to "
            f"{Path(directory).resolve()}")
    entry = config.training.entry_point or ""
    script = (source_dir / entry).resolve()
    if Path(entry).is_absolute() or not script.is_relative_to(source_dir):
        raise ConfigError(
            f"invalid configuration in {source}: training.entry_point {entry!r} must be a path inside "
            f"training.source_dir ({source_dir}), e.g. train.py")
    if not script.is_file():
        raise ConfigError(
            f"invalid configuration in {source}: training.entry_point {entry!r} not found: {script} does not "
            f"exist; put the script in {source_dir} or fix training.entry_point / training.source_dir")


def load_config(
    directory: str | os.PathLike[str] = ".",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> UseCaseConfig:
    """Load ``directory/modelcycle.yaml`` with environment and explicit overrides applied; a
    relative ``data.path`` becomes absolute, relative to ``directory``.

    Raises:
        ConfigError: the file is missing, not UTF-8 or not YAML, or a key or value is invalid (every
            problem is listed with its key path).
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"no {CONFIG_FILE} in {Path(directory).resolve()}: create one with "
            "'modelcycle init DIR --framework pytorch --example mnist' or pass -C DIR"
        )
    try:
        data = yaml.safe_load(read_utf8(path, ConfigError, f"save {CONFIG_FILE} as UTF-8 text")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (name, framework, ...)")
    merged = {**_env_overrides(os.environ if environ is None else environ), **(overrides or {})}
    for key, value in merged.items():
        origin = "override" if overrides and key in overrides else "environment"
        _set_path(data, key.split("."), value, f"{origin} '{key}'")
    source = str(path) + (" (with overrides)" if merged else "")
    config: UseCaseConfig = validate_section(UseCaseConfig, data, "", source)  # type: ignore[assignment]
    if config.training.script_mode:
        check_script_paths(config, Path(directory), source)
    if config.data.path and not Path(config.data.path).expanduser().is_absolute():
        # a relative data path is the use case's, wherever modelcycle runs from
        location = (Path(directory) / config.data.path).resolve()
        config.data = config.data.model_copy(update={"path": str(location)})
    return config
