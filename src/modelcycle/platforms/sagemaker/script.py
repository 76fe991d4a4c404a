"""Script mode on SageMaker: the user's own training script and inference handlers.

A use case with ``training.entry_point`` is trained by the user's script, unchanged, in the
framework's SageMaker container (``PyTorch`` for pytorch/lightning, ``TensorFlow`` for keras),
as SageMaker's own ``PyTorch(entry_point=..., source_dir=...)`` would run it:

- the source archive is a clean copy of ``training.source_dir`` (resolved against the use case
  directory): no ``.modelcycle`` work dir, no ``modelcycle.yaml``, no ``__pycache__``;
- hyperparameters are ``training.hyperparameters`` as given, ``metric_definitions`` the
  config's ``[{Name, Regex}]``;
- the job's ``model.tar.gz`` (whatever the script wrote to ``SM_MODEL_DIR``) becomes the run's
  model directory in SageMaker's layout: the job's files at the top level, the source dir under
  ``code/`` and a ``modelcycle.json`` whose ``script`` records the entry points; its metrics
  are SageMaker's ``FinalMetricDataList`` of the job.
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

#: Never shipped from a user's source dir: modelcycle's work dir (runs, tracking data), caches,
#: version control and the use case's config (which may name tracking or governance services).
_SKIPPED = {".modelcycle", "__pycache__", ".git", ".ipynb_checkpoints", ".pytest_cache", "modelcycle.yaml"}


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


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {name for name in names if name in _SKIPPED or name.endswith(".pyc")}


def stage_source_dir(source: Path, target: Path) -> Path:
    """Copy the user's ``source`` dir to ``target`` without what must not ship (see module doc);
    returns ``target``."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=_ignored, symlinks=False)
    return target


def estimator_arguments(config: Any, source_dir: Path) -> dict[str, Any]:
    """The estimator arguments that make a job run the user's script: ``entry_point``,
    ``source_dir``, ``hyperparameters`` (as given: the SDK JSON-encodes them and the container
    passes them as ``--name value``) and ``metric_definitions``."""
    training = config.training
    return {
        "entry_point": training.entry_point,
        "source_dir": str(source_dir),
        "hyperparameters": dict(training.hyperparameters),
        "metric_definitions": [{"Name": m.name, "Regex": m.regex} for m in training.metric_definitions],
    }


def final_metrics(description: dict[str, Any]) -> dict[str, float]:
    """``{MetricName: Value}`` of a DescribeTrainingJob's ``FinalMetricDataList`` (empty when absent)."""
    metrics: dict[str, float] = {}
    for item in description.get("FinalMetricDataList") or []:
        if item.get("MetricName") and item.get("Value") is not None:
            metrics[str(item["MetricName"])] = float(item["Value"])
    return metrics


def _manifest(context: TrainingContext, model_dir: Path, metrics: dict[str, float], job: dict[str, Any]) -> Any:
    from modelcycle.core.artifacts import DatasetLineage, Manifest, Preprocessing, ScriptMode, hash_files
    from modelcycle.core.artifacts import modelcycle_version as current_version
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.providers import framework_provider, plugin_provider
    from modelcycle.core.training import dataset_input_schema, dataset_input_shape

    config = context.config
    dataset = load_dataset(config.data.dataset, settings=config.data)
    shape = dataset_input_shape(dataset)
    providers = {"framework": framework_provider(context.registry, config.framework)}  # type: ignore[arg-type]
    dataset_provider = plugin_provider("dataset", config.data.dataset)
    if dataset_provider is not None:
        providers["dataset"] = dataset_provider
    files = hash_files(model_dir)
    hyperparameters = dict(config.training.hyperparameters)
    return Manifest(
        use_case=config.name,
        framework=config.framework,
        framework_version=providers["framework"].version,
        modelcycle_version=current_version(),
        libraries={SDK_FRAMEWORK[config.framework]: str(job.get("framework_version")),  # the job's container
                   "python": str(job.get("py_version"))},
        run_id=context.run_id,
        created_at=Manifest.now(),
        model_files=[name for name in files if not name.startswith("code/")],
        input_schema=dataset_input_schema(dataset, shape),
        preprocessing=Preprocessing(scale=1.0, mean=(0.0,) * shape[0], std=(1.0,) * shape[0]),  # the script's own
        classes=list(dataset.classes),
        dataset=DatasetLineage(name=dataset.name, checksums=dict(dataset.checksums),
                               train_records=len(dataset.train), test_records=len(dataset.test)),
        metrics=metrics,
        hyperparameters=hyperparameters,
        providers=providers,
        files=files,
        script=ScriptMode(training_entry_point=str(config.training.entry_point),
                          serving_entry_point=config.serving.entry_point, hyperparameters=hyperparameters),
    )


def script_result(context: TrainingContext, job_archive: Path, source: Path, metrics: dict[str, float],
                  job: dict[str, Any], started: float) -> TrainingResult:
    """The run's model directory from the job's ``model.tar.gz``: extracted into
    ``<run>/model``, ``source`` (the staged source dir) copied under ``code/``, ``modelcycle.json``
    written, and ``<run>/model.tar.gz`` packed again from it.

    Raises:
        StageError: the script wrote nothing to ``SM_MODEL_DIR``.
    """
    from modelcycle.core.artifacts import ARCHIVE_NAME, extract_archive, package_directory, write_manifest
    from modelcycle.core.errors import StageError
    from modelcycle.core.training import TrainingResult

    output_dir = Path(context.output_dir)
    model_dir = output_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    extract_archive(job_archive, model_dir)
    if not any(model_dir.iterdir()):
        raise StageError(
            "train",
            f"SageMaker training job {job.get('name')}: {context.config.training.entry_point} wrote nothing to "
            "SM_MODEL_DIR, so there is no model; save the model into os.environ['SM_MODEL_DIR']",
        )
    shutil.copytree(source, model_dir / "code", ignore=_ignored, dirs_exist_ok=True)
    write_manifest(model_dir, _manifest(context, model_dir, metrics, job))
    (output_dir / (ARCHIVE_NAME + ".sha256")).unlink(missing_ok=True)  # a checksum of an earlier archive
    archive = package_directory(model_dir, output_dir / ARCHIVE_NAME)
    facts: dict[str, Any] = {"tags": {"job_name": job.get("name"), "entry_point": context.config.training.entry_point},
                             "job": job}
    return TrainingResult(
        run_id=context.run_id,
        metrics=metrics,
        duration_s=time.perf_counter() - started,
        model_dir=model_dir,
        archive=archive,
        facts=facts,
    )
