"""The model of a script-mode run: what the user's script wrote to ``SM_MODEL_DIR``, packaged
in SageMaker's layout with modelcycle's manifest.

A platform that ran the user's ``training.entry_point`` (locally or elsewhere) hands over the
directory the script wrote (``SM_MODEL_DIR``: ``model.pth``, a SavedModel under ``1/``...) and
the user's source dir; :func:`package_script_model` writes

- ``model.tar.gz`` (run directory): the script's files at the top level, the source dir under
  ``code/`` (``inference.py``, ``requirements.txt`` when present, helper modules; no
  ``__pycache__``, no ``.modelcycle``) and ``modelcycle.json``: a :class:`Manifest` with
  ``script`` set, the data set's input schema, classes and lineage, identity preprocessing (the
  user's handlers do their own), the metrics parsed from the script's output and the SHA-256 of
  every file (``files``), so :func:`~modelcycle.core.artifacts.verify_model` checks it as any
  other model;
- the run's model directory: that archive extracted, as an endpoint receives it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.artifacts import (
    ARCHIVE_NAME,
    DatasetLineage,
    InputSchema,
    Manifest,
    Preprocessing,
    ScriptMode,
    extract_archive,
    hash_files,
    modelcycle_version,
    package_directory,
    write_manifest,
)

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.config import UseCaseConfig
    from modelcycle.core.training_types import TrainingContext, TrainingResult

__all__ = ["SOURCE_IGNORED", "DataDescription", "copy_source_dir", "describe_dataset", "package_script_model",
           "script_training_result"]

#: names never copied from the user's source dir into a job or a model's ``code/``
SOURCE_IGNORED = (".modelcycle", "__pycache__", "*.pyc", ".git", ".ipynb_checkpoints", "mlruns", ".venv")


@dataclass(frozen=True)
class DataDescription:
    """What a script-mode manifest says about the data set the script trained on."""

    input_schema: InputSchema
    preprocessing: Preprocessing
    classes: list[str]
    lineage: DatasetLineage


def describe_dataset(config: UseCaseConfig) -> DataDescription:
    """Load ``config.data``'s data set through its plugin (cached in-process) and describe it:
    the raw input clients send, identity preprocessing, class names and lineage (file checksums,
    record counts of the whole splits: the script reads the original files).

    Raises:
        DatasetNotFoundError, PluginNotFoundError: as :func:`~modelcycle.core.datasets.load_dataset`.
    """
    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.training import dataset_input_schema, dataset_input_shape

    dataset = load_dataset(config.data.dataset, settings=config.data)
    shape = dataset_input_shape(dataset)
    width = len(dataset.features) if dataset.tabular else shape[0]
    return DataDescription(
        input_schema=dataset_input_schema(dataset, shape),
        preprocessing=Preprocessing(scale=1.0, mean=(0.0,) * width, std=(1.0,) * width),
        classes=list(dataset.classes),
        lineage=DatasetLineage(name=dataset.name, checksums=dict(dataset.checksums),
                               train_records=len(dataset.train), test_records=len(dataset.test)),
    )


def copy_source_dir(source_dir: Path, target: Path, ignore: tuple[str, ...] = (), follow_links: bool = False) -> Path:
    """Copy the user's source dir to ``target`` without :data:`SOURCE_IGNORED` nor the glob
    patterns ``ignore``; links are copied as links, or with ``follow_links`` as what they point
    at (an archive leaving the machine). ``target`` is replaced. Returns ``target``."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source_dir, target, symlinks=not follow_links,
                    ignore=shutil.ignore_patterns(*SOURCE_IGNORED, *ignore))
    return target


def package_script_model(
    context: TrainingContext,
    script_model_dir: Path,
    source_dir: Path,
    data: DataDescription,
    metrics: dict[str, float],
    staging: Path,
    libraries: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Package what the script wrote to ``SM_MODEL_DIR`` (``script_model_dir``) with the source
    dir under ``code/`` and the manifest, in ``staging`` (replaced); write ``model.tar.gz`` in the
    run directory (``context.output_dir``) and extract it as the run's ``model/``. The manifest's
    ``libraries`` are this machine's versions of the framework's libraries unless ``libraries``
    (e.g. a remote job's container) says otherwise.

    Returns:
        ``(model_dir, archive)``.

    Raises:
        StageError: the script wrote nothing to ``SM_MODEL_DIR``.
    """
    from modelcycle.core.errors import StageError
    from modelcycle.core.providers import artifact_providers

    config = context.config
    script = config.training.entry_point or ""
    written = sorted(p for p in Path(script_model_dir).rglob("*") if p.is_file())
    if not written:
        raise StageError(
            "train", f"training script {script} wrote nothing to SM_MODEL_DIR ({script_model_dir}): save the "
            "model there, e.g. torch.save(model.state_dict(), os.path.join(os.environ['SM_MODEL_DIR'], 'model.pth'))")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(script_model_dir, staging, symlinks=False)
    code = staging / "code"
    if code.exists():  # SageMaker's repack: the source dir replaces a code/ the script wrote
        shutil.rmtree(code)
    copy_source_dir(source_dir, code)
    info, providers = artifact_providers(context.registry, config.framework, config.data.dataset)  # type: ignore[arg-type]
    framework = providers["framework"]
    manifest = Manifest(
        use_case=config.name,
        framework=config.framework,
        framework_version=framework.version,
        modelcycle_version=modelcycle_version(),
        libraries=dict(libraries) if libraries is not None else Manifest.runtime_libraries(*info.libraries),
        run_id=context.run_id,
        created_at=Manifest.now(),
        model_files=[p.relative_to(script_model_dir).as_posix() for p in written
                     if p.relative_to(script_model_dir).parts[0] != "code"],
        input_schema=data.input_schema,
        preprocessing=data.preprocessing,
        classes=data.classes,
        dataset=data.lineage,
        metrics=metrics,
        hyperparameters=dict(config.training.hyperparameters),
        providers=providers,
        files=hash_files(staging),  # every file but the manifest, which is not written yet
        script=ScriptMode(training_entry_point=script, serving_entry_point=config.serving.entry_point,
                          hyperparameters=dict(config.training.hyperparameters)),
    )
    write_manifest(staging, manifest)
    output_dir = Path(context.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = package_directory(staging, output_dir / ARCHIVE_NAME)
    model_dir = output_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    extract_archive(archive, model_dir)
    return model_dir, archive


def script_training_result(
    context: TrainingContext, model_dir: Path, archive: Path, metrics: dict[str, float],
    history: list[dict[str, float]], duration_s: float, job: dict[str, Any],
) -> TrainingResult:
    """The TrainingResult of a script-mode run (its facts tag the job and entry point and carry
    the script's hyperparameters as ``script.<name>`` params)."""
    from modelcycle.core.training_types import TrainingResult

    training = context.config.training
    facts: dict[str, Any] = {
        "tags": {"job_name": job.get("name"), "entry_point": training.entry_point, "modelcycle.script_mode": "true"},
        "params": {"script": dict(training.hyperparameters)} if training.hyperparameters else {},
        "job": job,
    }
    return TrainingResult(run_id=context.run_id, metrics=dict(metrics), history=list(history),
                          duration_s=duration_s, model_dir=model_dir, archive=archive, facts=facts)
