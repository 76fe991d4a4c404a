"""The in-process trainer: dataset → build → fit → save → manifest → ``model.tar.gz``.

Framework plugins do the framework work through hooks; this module owns what every framework
shares: the data, the normalisation computed once, the seed log lines and progress bar, the
facts, and the artifact layout.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from modelcycle.core.artifacts import (
    DatasetLineage,
    InputSchema,
    Manifest,
    Preprocessing,
    modelcycle_version,
    package_model,
    write_manifest,
)
from modelcycle.core.config import Hyperparameters, UseCaseConfig

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.datasets import Dataset
    from modelcycle.core.registry import PluginRegistry

__all__ = ["TrainingReporter", "TrainingContext", "TrainingResult", "load_training_data", "train_in_process"]


class TrainingReporter:
    """Prints the seeds' log lines (rank 0 only), drives a progress bar on a terminal, and
    broadcasts ``on_epoch_end``.

    Args:
        hook: the registry's hook relay.
        stream: where log lines go (stdout by default).
        quiet: print nothing (non-zero ranks, benchmarks).
        progress: show a rich progress bar; default: when ``stream`` is a terminal.
    """

    def __init__(self, hook: Any, stream: IO[str] | None = None, quiet: bool = False, progress: bool | None = None) -> None:
        self.hook = hook
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.history: list[dict[str, float]] = []
        use_bar = (not quiet) and (progress if progress is not None else self.stream.isatty())
        self._bar: Any = None
        self._task: Any = None
        if use_bar:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )

    @property
    def has_progress_bar(self) -> bool:
        """Whether this reporter draws its own progress bar (frameworks then hide theirs)."""
        return self._bar is not None

    def log(self, line: str) -> None:
        """Print one line (not from quiet reporters), above the progress bar when there is one."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def start_epoch(self, epoch: int, num_batches: int) -> None:
        """Called by ``fit`` at the start of each epoch (1-based)."""
        if self._bar is not None:
            if self._task is None:
                self._bar.start()
                self._task = self._bar.add_task("train", total=num_batches, epoch=epoch, loss=0.0)
            else:
                self._bar.reset(self._task, total=num_batches, epoch=epoch, loss=0.0)

    def batch(self, epoch: int, batch_index: int, num_batches: int, batch_size: int, total: int, loss: float) -> None:
        """Log ``Train Epoch: 1 [6400/60000 (11%)] Loss: 0.903774`` (call every log_interval)."""
        self.log(
            f"Train Epoch: {epoch} [{batch_index * batch_size}/{total} "
            f"({100.0 * batch_index / num_batches:.0f}%)] Loss: {loss:.6f}"
        )
        if self._task is not None:
            self._bar.update(self._task, completed=batch_index, loss=loss)

    def test_result(self, loss: float, correct: int, total: int) -> None:
        """Log ``Test set: Average loss: 0.1020, Accuracy: 9690/10000 (96.90%)``."""
        self.log(
            f"Test set: Average loss: {loss:.4f}, Accuracy: {correct}/{total} "
            f"({100.0 * correct / total:.2f}%)\n"
        )

    def end_epoch(self, epoch: int, metrics: dict[str, float], context: TrainingContext) -> None:
        """Record the epoch's metrics and broadcast ``on_epoch_end``."""
        self.history.append({"epoch": float(epoch), **metrics})
        self.hook.on_epoch_end(epoch=epoch, metrics=metrics, context=context)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@dataclass
class TrainingResult:
    """What a training run produced. ``model`` is the live object (in-process runs only)."""

    run_id: str
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    summary: str = ""
    duration_s: float = 0.0
    model_dir: Path | None = None
    archive: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)

    def outputs(self) -> dict[str, Any]:
        """The JSON-serialisable part, persisted as the ``train`` stage's outputs."""
        return {
            "run_id": self.run_id,
            "metrics": self.metrics,
            "history": self.history,
            "duration_s": round(self.duration_s, 3),
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "archive": str(self.archive) if self.archive else None,
        }


@dataclass
class TrainingContext:
    """Everything a framework hook needs during training.

    ``state`` is scratch space a plugin owns for one run (optimizer, scheduler, ...).
    """

    config: UseCaseConfig
    model_config: BaseModel
    registry: PluginRegistry
    reporter: TrainingReporter
    run_id: str
    output_dir: Path
    preprocessing: Preprocessing | None = None
    input_shape: tuple[int, int, int] = (1, 28, 28)
    rank: int = 0
    world_size: int = 1
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self.config.hyperparameters

    @property
    def hook(self) -> Any:
        return self.registry.hook

    @property
    def model_dir(self) -> Path:
        return self.output_dir / "model"


def load_training_data(config: UseCaseConfig) -> tuple[Dataset, Preprocessing]:
    """Load the configured dataset (limits applied) and its normalisation (full train split)."""
    from modelcycle.core.datasets import load_dataset

    dataset = load_dataset(config.data.dataset, settings=config.data)
    mean, std = dataset.normalization()
    preprocessing = Preprocessing(scale=255.0, mean=tuple(mean), std=tuple(std))
    if config.data.train_limit or config.data.test_limit:
        dataset = dataclasses.replace(
            dataset,
            train=dataset.train.take(config.data.train_limit or len(dataset.train)),
            test=dataset.test.take(config.data.test_limit or len(dataset.test)),
        )
    return dataset, preprocessing


def dataset_input_shape(dataset: Dataset) -> tuple[int, int, int]:
    """``(C, H, W)`` of one image of ``dataset`` (images are stored ``(N, H, W[, C])``)."""
    images = dataset.train.images
    channels = 1 if images.ndim == 3 else int(images.shape[3])
    return (channels, int(images.shape[1]), int(images.shape[2]))


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
    from modelcycle.core.providers import archive_requirements, framework_info, framework_provider, plugin_provider

    info = framework_info(registry, config.framework)
    framework = framework_provider(registry, config.framework, info)
    providers = {"framework": framework}
    dataset_provider = plugin_provider("dataset", config.data.dataset)
    if dataset_provider is not None:
        providers["dataset"] = dataset_provider
    manifest = Manifest(
        use_case=config.name,
        framework=config.framework,
        framework_version=framework.version,
        modelcycle_version=modelcycle_version(),
        libraries=Manifest.runtime_libraries(*info.libraries),
        run_id=context.run_id,
        created_at=Manifest.now(),
        model_files=list(files),
        input_schema=InputSchema(shape=context.input_shape),
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
    )
    write_manifest(model_dir, manifest)
    result.model_dir = model_dir
    result.archive = package_model(model_dir, archive_requirements(framework, manifest.modelcycle_version))
    return result
