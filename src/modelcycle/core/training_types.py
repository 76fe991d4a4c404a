"""The objects a framework plugin receives and returns while training: the
:class:`TrainingContext` every training hook gets, the :class:`TrainingReporter` that prints the
seeds' log lines and records per-epoch metrics, and the :class:`TrainingResult` ``fit`` returns.

A leaf of the engine: it names the configuration and artifact types for type checkers only and
sees the plugin registry through the small :class:`PluginCaller` protocol, so the hook
specifications can name these types without an import cycle.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from modelcycle.core import checkpoints

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import BaseModel

    from modelcycle.core.artifacts import Preprocessing
    from modelcycle.core.config import Hyperparameters, UseCaseConfig

__all__ = ["PluginCaller", "TrainingReporter", "TrainingContext", "TrainingResult"]


class PluginCaller(Protocol):
    """What training code uses of the :class:`~modelcycle.core.registry.PluginRegistry`."""

    @property
    def hook(self) -> Any:
        """The hook relay (``hook.train_step(...)``, ``hook.on_epoch_end(...)``)."""

    def call_first(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a firstresult hook; an unanswered hook raises instead of returning ``None``."""


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

    def last_metrics(self) -> dict[str, float]:
        """The last recorded epoch's metrics without ``epoch`` (``{}`` before the first epoch):
        what ``fit`` returns when a resumed run had no epoch left to train."""
        return {k: v for k, v in self.history[-1].items() if k != "epoch"} if self.history else {}

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

    ``checkpoint_dir`` is where the run's per-epoch checkpoints go (``<run dir>/checkpoint``;
    ``None``: no checkpoints). ``fit`` trains from :meth:`start_epoch` and calls
    :meth:`save_checkpoint` after each epoch; ``resumed_epoch`` is the epoch the run resumed
    after (0: it started at epoch 1).
    """

    config: UseCaseConfig
    model_config: BaseModel
    registry: PluginCaller
    reporter: TrainingReporter
    run_id: str
    output_dir: Path
    preprocessing: Preprocessing | None = None
    #: one model input: ``(C, H, W)`` of an image, or ``(W,)`` of an encoded tabular record
    input_shape: tuple[int, ...] = (1, 28, 28)
    rank: int = 0
    world_size: int = 1
    state: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: Path | None = None
    resumed_epoch: int = 0
    #: the directory ``model.class`` files are relative to (the use case directory; a job's source dir)
    source_dir: Path | None = None
    #: the user's model code (:class:`~modelcycle.core.user_code.UserCode`) a ``build_model`` loaded;
    #: the trainer copies it into the model directory's ``code/user/`` and records it in the manifest
    user_code: Any = None

    def start_epoch(self, model: Any) -> int:
        """The first epoch ``fit`` trains: 1, or the epoch after the run's last complete
        checkpoint, whose state is restored into ``model`` and ``state`` (the framework's
        ``load_checkpoint`` hook), the Python and NumPy RNGs and ``reporter.history``. Call it
        once, after creating the optimizer and schedule. Always 1 without ``checkpoint_dir``,
        on several processes, or for a framework without checkpoint hooks.

        Raises:
            CheckpointError: the checkpoint is damaged or cannot be restored (names it).
        """
        return checkpoints.resume(self, model)

    def save_checkpoint(self, model: Any, epoch: int) -> None:
        """Commit the checkpoint of the completed ``epoch`` (1-based) atomically: the
        framework's ``save_checkpoint`` files plus the epoch, history and RNG states. Call it
        after ``reporter.end_epoch``. A no-op where :meth:`start_epoch` always returns 1."""
        checkpoints.save(self, model, epoch)

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self.config.hyperparameters

    @property
    def hook(self) -> Any:
        return self.registry.hook

    @property
    def model_dir(self) -> Path:
        return self.output_dir / "model"
