"""The in-process trainer: dataset → build → fit → save → manifest → ``model.tar.gz``.

Framework plugins do the framework work through hooks; this module owns what every framework
shares: the data, the normalisation computed once, the seed log lines and progress bar, the
facts, and the artifact layout.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcycle.core.artifacts import (
    DatasetLineage,
    FieldSchema,
    InputSchema,
    Manifest,
    Preprocessing,
    modelcycle_version,
    package_model,
    write_manifest,
)
from modelcycle.core.config import UseCaseConfig
from modelcycle.core.training_types import TrainingContext, TrainingReporter, TrainingResult

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.dataset_types import Dataset

__all__ = ["TrainingReporter", "TrainingContext", "TrainingResult", "load_training_data", "train_in_process"]


def load_training_data(config: UseCaseConfig) -> tuple[Dataset, Preprocessing]:
    """Load the configured dataset (limits applied) and its normalisation (full train split)."""
    from modelcycle.core.datasets import load_dataset

    dataset = load_dataset(config.data.dataset, settings=config.data)
    preprocessing = dataset_preprocessing(dataset)
    if config.data.train_limit or config.data.test_limit:
        dataset = dataclasses.replace(
            dataset,
            train=dataset.train.take(config.data.train_limit or len(dataset.train)),
            test=dataset.test.take(config.data.test_limit or len(dataset.test)),
        )
    return dataset, preprocessing


def dataset_preprocessing(dataset: Dataset) -> Preprocessing:
    """The training-time transformation of ``dataset``'s records (statistics of the full train
    split): images are scaled by 255 and standardised per channel; tabular records are
    standardised per numerical column and one-hot encoded per categorical one."""
    mean, std = dataset.normalization()
    if dataset.tabular:
        categories = tuple(len(feature.categories) for feature in dataset.features)
        return Preprocessing(scale=1.0, mean=tuple(mean), std=tuple(std), categories=categories)
    return Preprocessing(scale=255.0, mean=tuple(mean), std=tuple(std))


def dataset_input_shape(dataset: Dataset) -> tuple[int, ...]:
    """The shape of one model input: ``(C, H, W)`` of an image of ``dataset`` (images are
    stored ``(N, H, W[, C])``), or ``(W,)`` for tabular records, ``W`` the width of one encoded
    record (numerical columns plus one-hot columns)."""
    if dataset.tabular:
        return (sum(max(len(feature.categories), 1) for feature in dataset.features),)
    images = dataset.train.images
    channels = 1 if images.ndim == 3 else int(images.shape[3])
    return (channels, int(images.shape[1]), int(images.shape[2]))


def dataset_input_schema(dataset: Dataset, input_shape: tuple[int, ...]) -> InputSchema:
    """What clients send for ``dataset``: raw pixels of ``input_shape`` ``(C, H, W)``, or a
    tabular record of the named fields (shape ``(F,)``, float32, ``value_range`` the range the
    train records span; a categorical field carries its category's index)."""
    if not dataset.tabular:
        return InputSchema(shape=input_shape)
    records = dataset.train.images
    return InputSchema(
        kind="tabular",
        shape=(len(dataset.features),),
        dtype="float32",
        value_range=(float(records.min()), float(records.max())),
        fields=tuple(FieldSchema(name=f.name, kind=f.kind, categories=f.categories) for f in dataset.features),
    )


def _merge_facts(results: list[dict[str, Any] | None]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for result in results:
        for key, value in (result or {}).items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    return merged


def train_in_process(context: TrainingContext) -> TrainingResult:
    """Train, save and package the use case's model in this process.

    Returns:
        The result, with ``model_dir`` (files + manifest + ``code/``) and ``archive``.
    """
    config, registry = context.config, context.registry
    hp = config.hyperparameters
    random.seed(hp.seed)
    np.random.seed(hp.seed % 2**32)
    dataset, context.preprocessing = load_training_data(config)
    context.input_shape = dataset_input_shape(dataset)
    model = registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)
    summary = registry.hook.summarize_model(model=model, context=context) or ""
    if summary and context.rank == 0:
        context.reporter.log(summary)
    facts = _merge_facts(registry.hook.collect_facts(context=context, stage="start"))
    started = time.perf_counter()
    try:
        result = registry.call_first("fit", model=model, dataset=dataset, context=context)
    finally:
        context.reporter.close()
    result.duration_s = time.perf_counter() - started
    result.summary = summary
    result.model = model
    facts = _merge_facts([facts, *registry.hook.collect_facts(context=context, stage="end")])
    result.facts = facts
    if context.rank != 0:
        return result
    model_dir = context.model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    files = registry.call_first("save_model", model=model, model_dir=model_dir, context=context)
    user_code = {}
    if context.user_code is not None:  # the model.class file travels in code/user/
        from modelcycle.core.user_code import package_user_code

        user_code = package_user_code(context.user_code, model_dir)
    from modelcycle.core.providers import archive_requirements, artifact_providers

    info, providers = artifact_providers(registry, config.framework, config.data.dataset)
    framework = providers["framework"]
    manifest = Manifest(
        use_case=config.name,
        framework=config.framework,
        framework_version=framework.version,
        modelcycle_version=modelcycle_version(),
        libraries=Manifest.runtime_libraries(*info.libraries),
        run_id=context.run_id,
        created_at=Manifest.now(),
        model_files=list(files),
        input_schema=dataset_input_schema(dataset, context.input_shape),
        preprocessing=context.preprocessing,
        classes=list(dataset.classes),
        dataset=DatasetLineage(
            name=dataset.name,
            checksums=dict(dataset.checksums),
            train_records=len(dataset.train),
            test_records=len(dataset.test),
        ),
        metrics=result.metrics,
        hyperparameters=hp.model_dump(),
        model=context.model_config.model_dump(),
        providers=providers,
        user_code=user_code,
    )
    write_manifest(model_dir, manifest)
    result.model_dir = model_dir
    result.archive = package_model(model_dir, archive_requirements(framework, manifest.modelcycle_version))
    return result
