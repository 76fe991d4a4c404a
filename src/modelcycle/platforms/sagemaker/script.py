"""Script mode on SageMaker: the user's own training script and inference handlers.

A use case with ``training.entry_point`` is trained by the user's script, unchanged, in the
framework's SageMaker container (``PyTorch`` for pytorch/lightning, ``TensorFlow`` for keras),
as SageMaker's own ``PyTorch(entry_point=..., source_dir=...)`` would run it:

- the source archive is a clean copy of ``training.source_dir`` (resolved against the use case
  directory): no ``.modelcycle`` work dir, no ``modelcycle.yaml``, no ``__pycache__``;
- hyperparameters are ``training.hyperparameters`` as given, ``metric_definitions`` the
  config's ``[{Name, Regex}]``, else the seeds' lines
  (:data:`~modelcycle.core.script_metrics.SEED_METRIC_DEFINITIONS`), so a seed script's run
  gets its final loss and accuracy as a local run does;
- the job's ``model.tar.gz`` (whatever the script wrote to ``SM_MODEL_DIR``) becomes the run's
  model directory exactly as a local script run's
  (:func:`~modelcycle.core.script_model.package_script_model`): the job's files at the top
  level, the source dir under ``code/`` and a ``modelcycle.json`` whose ``script`` records the
  entry points; its metrics are SageMaker's ``FinalMetricDataList`` of the job.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.errors import ConfigError
from modelcycle.platforms.sagemaker.session import SDK_FRAMEWORK

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.training import TrainingContext, TrainingResult

__all__ = ["estimator_arguments", "final_metrics", "script_result", "stage_source_dir", "user_source_dir"]

#: Never shipped to SageMaker from a user's source dir, beyond what no model's ``code/`` holds
#: (:data:`~modelcycle.core.script_model.SOURCE_IGNORED`: work dir, caches, version control):
#: the use case's config (which may name tracking or governance services).
_NOT_SHIPPED = (".pytest_cache", "modelcycle.yaml")


def user_source_dir(config: Any, base_dir: Path | None) -> Path:
    """``training.source_dir`` resolved against the use case directory ``base_dir`` (default:
    that directory itself), checked to hold ``training.entry_point`` and ``serving.entry_point``.

    Raises:
        ConfigError: the directory or a named script is missing (names the file and the directory).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    source = (base / (config.training.source_dir or ".")).resolve()
    if not source.is_dir():
        raise ConfigError(
            f"training.source_dir '{config.training.source_dir}' is not a directory (looked for {source}, relative "
            f"to the use case directory {base}); point it at the directory holding {config.training.entry_point}"
        )
    for key, name in (("training.entry_point", config.training.entry_point), ("serving.entry_point",
                                                                             config.serving.entry_point)):
        if name and not (source / name).is_file():
            raise ConfigError(
                f"{key} '{name}' not found in {source} (training.source_dir); put the script there or fix {key}"
            )
    return source


def stage_source_dir(source: Path, target: Path) -> Path:
    """Copy the user's ``source`` dir to ``target`` without what must not ship (see module doc;
    links resolved: the archive leaves this machine); returns ``target``."""
    from modelcycle.core.script_model import copy_source_dir

    return copy_source_dir(source, target, ignore=_NOT_SHIPPED, follow_links=True)


def estimator_arguments(config: Any, source_dir: Path) -> dict[str, Any]:
    """The estimator arguments that make a job run the user's script: ``entry_point``,
    ``source_dir``, ``hyperparameters`` (as given: the SDK JSON-encodes them and the container
    passes them as ``--name value``) and ``metric_definitions`` (the seeds' lines when the
    config has none)."""
    from modelcycle.core.script_metrics import SEED_METRIC_DEFINITIONS

    training = config.training
    definitions = training.metric_definitions or SEED_METRIC_DEFINITIONS
    return {
        "entry_point": training.entry_point,
        "source_dir": str(source_dir),
        "hyperparameters": dict(training.hyperparameters),
        "metric_definitions": [{"Name": m.name, "Regex": m.regex} for m in definitions],
    }


def final_metrics(description: dict[str, Any]) -> dict[str, float]:
    """``{MetricName: Value}`` of a DescribeTrainingJob's ``FinalMetricDataList`` (empty when absent)."""
    metrics: dict[str, float] = {}
    for item in description.get("FinalMetricDataList") or []:
        if item.get("MetricName") and item.get("Value") is not None:
            metrics[str(item["MetricName"])] = float(item["Value"])
    return metrics


def script_result(context: TrainingContext, job_archive: Path, source: Path, metrics: dict[str, float],
                  job: dict[str, Any], started: float) -> TrainingResult:
    """The run's model directory from the job's ``model.tar.gz``, packaged as a local script
    run's (:func:`~modelcycle.core.script_model.package_script_model`; the manifest's libraries
    are the job container's); ``metrics`` are the job's final metrics (the seeds' names when
    the config defines none, see :func:`~modelcycle.core.script_metrics.seed_final_metrics`).

    Raises:
        StageError: the script wrote nothing to ``SM_MODEL_DIR``.
    """
    from modelcycle.core.artifacts import ARCHIVE_NAME, extract_archive
    from modelcycle.core.script_metrics import seed_final_metrics
    from modelcycle.core.script_model import describe_dataset, package_script_model, script_training_result

    config = context.config
    if not config.training.metric_definitions:
        metrics = seed_final_metrics(metrics)
    output_dir = Path(context.output_dir)
    written = output_dir / "job-model"  # what the script wrote to SM_MODEL_DIR
    if written.exists():
        shutil.rmtree(written)
    extract_archive(job_archive, written)
    (output_dir / (ARCHIVE_NAME + ".sha256")).unlink(missing_ok=True)  # a checksum of an earlier archive
    libraries = {SDK_FRAMEWORK[config.framework]: str(job.get("framework_version")),  # the job's container
                 "python": str(job.get("py_version"))}
    try:
        model_dir, archive = package_script_model(context, written, source, describe_dataset(config), metrics,
                                                  output_dir / "package", libraries=libraries)
    finally:  # the run keeps model/ and model.tar.gz only
        shutil.rmtree(written, ignore_errors=True)
        shutil.rmtree(output_dir / "package", ignore_errors=True)
    return script_training_result(context, model_dir, archive, metrics, [], time.perf_counter() - started, job)
