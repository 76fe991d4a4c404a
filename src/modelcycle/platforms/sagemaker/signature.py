"""``modelcycle import-signature``: an mlmonitor ``model_signature.json`` → ``modelcycle.yaml``.

Kept: the framework (``aws_runtime.train_framework``), the dataset, the SageMaker instance
types, S3 prefix and base job name, and the quality monitor (``min_feedback_data_size`` and
thresholds, the limit moved under ``value`` — mlmonitor writes it under ``lower_limit``, which
OpenScale ignores).

With ``aws_runtime.train_script`` the use case runs in script mode, the user's scripts unchanged:
``training.entry_point`` is the train script, ``training.source_dir`` the signature's directory
(relative to where ``modelcycle.yaml`` is written; the scripts must be there),
``training.hyperparameters`` the signature's hyperparameters as the script expects them
(hyphenated names and values as given, mlmonitor's system arguments dropped) and
``serving.entry_point`` the inference script. Without a train script the hyperparameters become
modelcycle's (hyphens → underscores, known aliases mapped, model-shape keys moved to ``model:``).

Everything else is listed as dropped, with the reason: WML and Azure runtimes, the
fairness/drift/explainability/MRM/custom monitors, fetch functions, container versions older
than modelcycle's Python floor, and unknown keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ConfigError

__all__ = ["ImportResult", "convert_signature", "import_signature"]

_FRAMEWORKS = {"pytorch": "pytorch", "torch": "pytorch", "tensorflow": "keras", "keras": "keras"}
_HP_ALIASES = {"lr": "learning_rate", "batchsize": "batch_size"}
_ARCHITECTURES = {"cnn": "cnn", "fc": "fc", "mlp": "fc", "cifar": "cifar"}
_DATASETS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
             "fashionmnist": "fashion-mnist", "cifar10": "cifar10", "cifar-10": "cifar10"}
_SYSTEM_HPS = {"ibm-key-name", "catalog-id", "model-entry-id", "cp4d-env", "cp4d-url", "cp4d-username",
               "grc-model-name", "region-name"}
_DROPPED_SECTIONS = {
    "wml_runtime": "IBM Watson Machine Learning runtime (no modelcycle platform)",
    "azure_runtime": "Azure ML runtime (no modelcycle platform)",
    "fairness_monitor": "fairness monitor (not in modelcycle's monitoring)",
    "explain_monitor": "explainability monitor (not in modelcycle's monitoring)",
    "mrm_monitor": "model risk management monitor (not in modelcycle's monitoring)",
    "custom_monitor": "custom monitor (not in modelcycle's monitoring)",
    "drift_monitor": "OpenScale drift v1 (drift-model training); modelcycle's drift monitor has its own "
                     "metrics and defaults (monitoring.drift)",
}
_IMPLIED = {
    "feature_columns", "class_label", "prediction_field", "probability_fields", "categorical_columns",
    "problem_type", "data_type",
}


@dataclass
class ImportResult:
    """The converted config and everything the conversion left out or changed."""

    config: dict[str, Any]
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _name(signature: dict[str, Any], source: Path | None) -> str:
    candidates = [
        str(signature.get("source_dir") or ""),
        str((signature.get("aws_runtime") or {}).get("job_name") or ""),
        source.parent.name if source is not None else "",
    ]
    for raw in candidates:
        text = re.sub(r"^use_case_", "", raw.rstrip("/").rsplit("/", 1)[-1])  # mlmonitor writes "/use_case_x" too
        text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
        if text:
            return text[:63]
    return "imported-use-case"


def _model_fields(framework: str) -> set[str]:
    """The ``model:`` options of the installed framework plugin (its ``model_config_class``);
    none when it is not installed or declares no config class."""
    from modelcycle.core.errors import ModelcycleError
    from modelcycle.core.registry import PluginRegistry

    registry = PluginRegistry()
    try:
        registry.load_framework(framework)
    except ModelcycleError:
        return set()
    config_class = registry.pm.hook.model_config_class()
    return set(config_class.model_fields) if config_class is not None else set()


def _framework(runtime: dict[str, Any], signature: dict[str, Any], result: ImportResult) -> str:
    raw = str(runtime.get("train_framework") or runtime.get("inference_framework") or "pytorch").lower()
    hint = f"{runtime.get('train_script', '')} {signature.get('source_dir', '')}".lower()
    if raw == "pytorch" and ("lightning" in hint or "ptlt" in hint):
        result.notes.append("train_framework pytorch with a Lightning script → framework: lightning")
        return "lightning"
    if raw in _FRAMEWORKS:
        return _FRAMEWORKS[raw]
    result.notes.append(
        f"train_framework '{raw}' has no built-in modelcycle plugin (built in: pytorch, lightning, keras); "
        f"kept as framework: {raw}: install an adapter package that provides it"
    )
    return raw


def _hyperparameters(raw: dict[str, Any], framework: str, result: ImportResult) -> tuple[dict[str, Any], dict[str, Any]]:
    from modelcycle.core.config import Hyperparameters

    known = set(Hyperparameters.model_fields)
    model_fields = _model_fields(framework)
    hps: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SYSTEM_HPS:
            result.dropped.append(f"hyperparameters.{key}: mlmonitor system argument (governance/credentials)")
            continue
        name = key.replace("-", "_")
        name = _HP_ALIASES.get(name, name)
        if name in known:
            hps[name] = value
        elif name == "model" and str(value).lower() in _ARCHITECTURES and "architecture" in model_fields:
            model["architecture"] = _ARCHITECTURES[str(value).lower()]
        elif name in model_fields:
            model[name] = value
        else:
            result.dropped.append(f"hyperparameters.{key}: not a modelcycle hyperparameter or {framework} model key")
    if {"learning_rate"} <= set(hps):
        result.notes.append("learning_rate is the peak of modelcycle's one-cycle schedule (lr_schedule: onecycle); "
                            "set lr_schedule: constant for the seed's fixed rate")
    return hps, model


def _script_hyperparameters(raw: dict[str, Any], result: ImportResult) -> dict[str, Any]:
    """The train script's own arguments: names and values as the signature gives them, without
    mlmonitor's system arguments (governance keys and credentials names)."""
    hps: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SYSTEM_HPS:
            result.dropped.append(f"hyperparameters.{key}: mlmonitor system argument (governance/credentials)")
        elif isinstance(value, (str, int, float, bool)):
            hps[str(key)] = value
        else:
            result.dropped.append(f"hyperparameters.{key}: {type(value).__name__} value (a script argument is a "
                                  "string, number or boolean)")
    return hps


def _script_mode(runtime: dict[str, Any], raw_hps: dict[str, Any], source: Path | None, target_dir: Path | None,
                 result: ImportResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``training:`` and ``serving:`` script-mode keys of a signature naming a train script.

    Raises:
        ConfigError: a named script is not beside the signature (names the file and the directory).
    """
    import os

    scripts = {"train_script": str(runtime["train_script"])}
    if runtime.get("inference_script"):
        scripts["inference_script"] = str(runtime["inference_script"])
    if source is not None:
        directory = source.resolve().parent
        for key, name in scripts.items():
            if not (directory / name).is_file():
                raise ConfigError(
                    f"aws_runtime.{key} '{name}' is not in {directory} (the signature's directory, where the use "
                    "case's scripts must be): put the script there or fix the signature"
                )
        where = Path(target_dir).resolve() if target_dir is not None else directory
        source_dir = Path(os.path.relpath(directory, where)).as_posix()
    else:
        source_dir = "."
    training: dict[str, Any] = {"entry_point": scripts["train_script"], "source_dir": source_dir}
    hps = _script_hyperparameters(raw_hps, result)
    if hps:
        training["hyperparameters"] = hps
    result.kept.append(f"aws_runtime.train_script ({scripts['train_script']}) → training.entry_point, run unchanged "
                       f"from training.source_dir {source_dir}")
    result.kept.append(f"hyperparameters → training.hyperparameters ({', '.join(hps) or 'none'}), passed to the "
                       "script as --name value")
    serving: dict[str, Any] = {}
    if "inference_script" in scripts:
        serving["entry_point"] = scripts["inference_script"]
        result.kept.append(f"aws_runtime.inference_script ({scripts['inference_script']}) → serving.entry_point "
                           "(the endpoint runs its handlers)")
    return training, serving


def _quality(section: dict[str, Any], result: ImportResult) -> dict[str, Any] | None:
    if not section:
        return None
    quality: dict[str, Any] = {"enabled": bool(section.get("enabled", True))}
    parameters = section.get("parameters") or {}
    if "min_feedback_data_size" in parameters:
        quality["min_feedback_data_size"] = parameters["min_feedback_data_size"]
    for key in parameters:
        if key != "min_feedback_data_size":
            result.dropped.append(f"quality_monitor.parameters.{key}: unknown to modelcycle's quality monitor")
    thresholds = []
    for i, threshold in enumerate(section.get("thresholds") or []):
        kind = threshold.get("type", "lower_limit")
        value = threshold.get("value", threshold.get(kind))
        if value is None:
            result.dropped.append(f"quality_monitor.thresholds[{i}]: no value")
            continue
        if "value" not in threshold and kind in threshold:
            result.notes.append(
                f"quality threshold {threshold.get('metric_id')}: moved {kind}: {value} to value: {value} "
                "(mlmonitor's spelling, which OpenScale ignores)"
            )
        thresholds.append({"metric_id": threshold.get("metric_id"), "type": kind, "value": value})
    if thresholds:
        quality["thresholds"] = thresholds
    for key in section:
        if key not in ("enabled", "parameters", "thresholds"):
            result.dropped.append(f"quality_monitor.{key}: unknown key")
    return quality


def convert_signature(signature: dict[str, Any], source: Path | None = None,
                      target_dir: Path | None = None, platform: str = "sagemaker") -> ImportResult:
    """Convert a parsed ``model_signature.json`` read from ``source`` for a ``modelcycle.yaml``
    in ``target_dir`` (default: beside the signature); nothing is written. ``platform`` is where
    the use case trains and serves: ``sagemaker`` (mlmonitor's runtime) or ``local``.

    Raises:
        ConfigError: not a JSON object; a script it names is not beside ``source``.
    """
    if not isinstance(signature, dict):
        raise ConfigError("a model_signature.json holds a JSON object (signature, aws_runtime, ...)")
    result = ImportResult(config={})
    runtime = dict(signature.get("aws_runtime") or {})
    described = (signature.get("signature") or {}).get("description")
    framework = _framework(runtime, signature, result)
    config: dict[str, Any] = {"name": _name(signature, source)}
    if described:
        config["description"] = str(described)
    config["framework"] = framework
    config["capture"] = "autolog" if framework in ("keras", "lightning") else "manual"

    raw_hps = dict(signature.get("hyperparameters") or {})
    script_training: dict[str, Any] = {}
    script_serving: dict[str, Any] = {}
    if runtime.get("train_script"):
        script_training, script_serving = _script_mode(runtime, raw_hps, source, target_dir, result)
        hps, model = {}, {}
    else:
        hps, model = _hyperparameters(raw_hps, framework, result)
    if model:
        config["model"] = model
    datasets = dict(signature.get("datasets") or {})
    data_name = str(datasets.get("data_dir") or datasets.get("training_data") or "").lower()
    if data_name in _DATASETS:
        config["data"] = {"dataset": _DATASETS[data_name]}
    elif data_name:
        result.dropped.append(f"datasets.data_dir '{data_name}': not a dataset modelcycle reads (mnist, fashion-mnist, cifar10)")
    for key in datasets:
        if key not in ("data_dir",) and datasets[key] not in (None, "", data_name):
            result.dropped.append(f"datasets.{key}: mlmonitor data loading (modelcycle's dataset look-up replaces it)")
    if hps:
        config["hyperparameters"] = hps

    training: dict[str, Any] = {"platform": platform, **script_training}
    serving: dict[str, Any] = {"platform": platform, **script_serving}
    if runtime.get("train_instance"):
        training["instance_type"] = str(runtime["train_instance"]).replace("_", ".")
    if runtime.get("inference_instance"):
        serving["instance_type"] = str(runtime["inference_instance"]).replace("_", ".")
    if runtime.get("prefix"):
        training["prefix"] = str(runtime["prefix"])
    if runtime.get("job_name"):
        training["base_job_name"] = re.sub(r"[^a-zA-Z0-9-]+", "-", str(runtime["job_name"]))[:38].strip("-")
    for scope in ("train", "inference"):
        version, py = runtime.get(f"{scope}_framework_version"), runtime.get(f"{scope}_py_version")
        if version or py:
            result.dropped.append(
                f"aws_runtime.{scope}_framework_version/{scope}_py_version ({version}/{py}): modelcycle needs "
                "Python >= 3.11 in the container; its default framework images are used"
            )
    if runtime.get("inference_script") and not runtime.get("train_script"):
        result.dropped.append(f"aws_runtime.inference_script ({runtime['inference_script']}): without a "
                              "train_script modelcycle trains with its own entry point and serves its own handlers")
    for key in ("serializer", "deserializer"):
        if runtime.get(key) not in (None, "json"):
            result.dropped.append(f"aws_runtime.{key} ({runtime[key]}): modelcycle endpoints speak JSON and NPY")
    handled = {"train_instance", "inference_instance", "prefix", "job_name", "train_framework", "inference_framework",
               "train_framework_version", "train_py_version", "inference_framework_version", "inference_py_version",
               "train_script", "inference_script", "serializer", "deserializer"}
    for key in runtime:
        if key not in handled:
            result.dropped.append(f"aws_runtime.{key}: unknown key")
    config["training"] = training
    config["serving"] = serving

    quality = _quality(dict(signature.get("quality_monitor") or {}), result)
    if quality is not None:
        config["monitoring"] = {"quality": quality}

    for key, why in _DROPPED_SECTIONS.items():
        if key in signature:
            section = signature[key]
            if not section:
                state = "empty"
            elif isinstance(section, dict) and "enabled" in section:
                state = "enabled" if section.get("enabled") else "disabled"
            else:
                state = "set"
            result.dropped.append(f"{key} ({state}): {why}")
    for key in (signature.get("signature") or {}):
        if key not in _IMPLIED and key != "description":
            result.dropped.append(f"signature.{key}: unknown key")
    known = {"signature", "datasets", "aws_runtime", "hyperparameters", "quality_monitor", "source_dir", "__class__",
             *_DROPPED_SECTIONS}
    for key in signature:
        if key not in known:
            result.dropped.append(f"{key}: unknown key")
    result.notes.append(
        "signature fields (problem_type multiclass, unstructured_image, prediction/probability fields) are implied "
        "by modelcycle's image classifiers"
    )
    result.config = config
    return result


def import_signature(path: Path, output_dir: Path | None = None, force: bool = False,
                     platform: str = "sagemaker") -> tuple[Path, ImportResult]:
    """Convert ``path`` and write ``output_dir/modelcycle.yaml`` (default: beside the signature)
    for ``platform`` (see :func:`convert_signature`).

    Raises:
        ConfigError: an unreadable signature, or an existing modelcycle.yaml without ``force``.
    """
    import yaml

    from modelcycle.core.config import CONFIG_FILE

    path = Path(path)
    try:
        signature = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path} as JSON: {exc}") from None
    target_dir = Path(output_dir) if output_dir is not None else path.parent
    result = convert_signature(signature, path, target_dir, platform)
    target = target_dir / CONFIG_FILE
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it or -o another directory")
    target_dir.mkdir(parents=True, exist_ok=True)
    header = (f"# converted by 'modelcycle import-signature' from {path.name}\n"
              + "".join(f"# kept: {line}\n" for line in result.kept)
              + "".join(f"# dropped: {line}\n" for line in result.dropped))
    target.write_text(header + yaml.safe_dump(result.config, sort_keys=False))
    return target, result
