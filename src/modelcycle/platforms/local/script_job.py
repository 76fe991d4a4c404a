"""Script mode on this machine: the user's own SageMaker training script, run unchanged.

Selected when ``training.entry_point`` is set (``training: {entry_point: train.py, source_dir:
., hyperparameters: {...}, metric_definitions: [...]}``). The job goes through the same
container contract as modelcycle's own entry point (:func:`.container.run_job`): the user's
source dir (relative to the use case directory; no ``.modelcycle``, ``__pycache__``...) is the
job's ``code/``, ``training.hyperparameters`` are passed as ``--name value`` arguments, and
``instance_count`` hosts get ``SM_HOSTS`` / ``SM_CURRENT_HOST`` (plus ``MASTER_ADDR`` /
``MASTER_PORT``: the script opens its own process group, e.g. over gloo).

Channels ``training`` and ``testing`` both hold the data set's original files, as the seeds
pass one location for both: for the MNIST family the four IDX ``.gz`` files at the top level and
torchvision's layout beside them (``MNIST/raw/`` — ``FashionMNIST/raw/`` for fashion-mnist —
with the ``.gz`` files and the uncompressed files torchvision reads, decompressed once into
``.modelcycle/cache/``), so a hand-written reader and ``torchvision.datasets.MNIST(channel,
download=False)`` both work; cifar10's batch files at the top level. Everything is linked, not
copied.

Rank 0's output is streamed as it comes and parsed into metrics (:mod:`modelcycle.core.
script_metrics`); each point goes to the run's MLflow run as it is found. Afterwards what the
script wrote to ``SM_MODEL_DIR`` is packaged with the source dir and the manifest
(:func:`modelcycle.core.script_model.package_script_model`).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.script_metrics import MetricPoint
    from modelcycle.core.tracking import RunTracker
    from modelcycle.core.training import TrainingContext, TrainingResult

__all__ = ["FAILURE_TAIL_LINES", "run_script_job", "script_channels"]

#: lines of the script's output a failure shows
FAILURE_TAIL_LINES = 20
#: torchvision's dataset folder (``<channel>/<folder>/raw/``) per data set of the MNIST family
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _work_dir(context: TrainingContext) -> Path:
    output_dir = Path(context.output_dir)
    if output_dir.parent.name == "runs":  # <use case>/.modelcycle/runs/<run_id>
        return output_dir.parent.parent
    return output_dir


def _decompressed(source: Path, target: Path) -> Path:
    """``target``: ``source`` gunzipped, made once and again only when ``source`` changed."""
    stamp = target.parent.parent.parent / ".stamps" / f"{target.parent.parent.name}-{target.name}"
    stamp.parent.mkdir(exist_ok=True)
    wanted = f"{source.resolve()} {source.stat().st_size} {source.stat().st_mtime_ns}"
    if target.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return target
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with gzip.open(source, "rb") as raw, open(tmp, "wb") as out:
        shutil.copyfileobj(raw, out, 1 << 20)
    os.replace(tmp, target)
    stamp.write_text(wanted)
    return target


def _relink(source: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(source.resolve())


def _torchvision_tree(files: list[Path], folder: str, cache: Path) -> Path:
    """``cache/<folder>`` holding ``raw/`` as torchvision expects it: each file linked under its
    own name, and each ``.gz`` also decompressed under its name without ``.gz``."""
    raw = cache / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for path in files:
        _relink(path, raw / path.name)
        if path.suffix == ".gz":
            _decompressed(path, raw / path.stem)
    return cache / folder


def script_channels(dataset: str, data_dir: Path, cache: Path) -> dict[str, list[Path]]:
    """The ``training`` and ``testing`` channels of a script-mode job: both hold every original
    file of ``dataset`` (located in ``data_dir``), plus torchvision's folder for the MNIST family
    (built under ``cache``). Each entry is linked into the channel under its own name.

    Raises:
        ConfigError: a data set whose original files cannot be shipped (not mnist,
            fashion-mnist or cifar10).
        DatasetNotFoundError: a file is missing.
    """
    from modelcycle.core.entrypoint import channel_files
    from modelcycle.core.errors import ConfigError

    if dataset not in (*_TORCHVISION_FOLDERS, "cifar10"):
        raise ConfigError(
            f"script mode cannot hand data set '{dataset}' to a training script yet: its channels are filled "
            "with the original files of mnist, fashion-mnist or cifar10; set data.dataset to one of them")
    split = channel_files(dataset, Path(data_dir))
    files = split["training"] + split["testing"]
    if dataset in _TORCHVISION_FOLDERS:
        files = files + [_torchvision_tree(files, _TORCHVISION_FOLDERS[dataset], cache / dataset)]
    return {"training": list(files), "testing": list(files)}


class _LineTap(io.TextIOBase):
    """A text stream that feeds each complete line to ``on_line`` and echoes to ``echo``."""

    def __init__(self, on_line: Any, echo: IO[str] | None) -> None:
        self._on_line = on_line
        self._echo = echo
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._echo is not None:
            self._echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._on_line(line)
        return len(text)

    def flush(self) -> None:
        if self._echo is not None:
            self._echo.flush()

    def finish(self) -> None:
        """Feed the last line when the output did not end with a newline."""
        if self._pending:
            self._on_line(self._pending)
            self._pending = ""


def _tracker(context: TrainingContext) -> RunTracker | None:
    """The run's MLflow tracker, registered as a plugin for the run (``None``: not tracked)."""
    from modelcycle.core.tracking import RunTracker

    pm = getattr(context.registry, "pm", None)
    for plugin in pm.get_plugins() if pm is not None else ():
        if isinstance(plugin, RunTracker):
            return plugin
    return None


def _metric_logger(tracker: RunTracker | None) -> Any:
    def log(points: list[MetricPoint]) -> None:
        if tracker is None:
            return
        for point in points:
            tracker.log_metrics({point.name: point.value}, step=point.step)
        # the series are in MLflow as training goes: the final metrics need no extra point
        tracker.epochs_logged = max(tracker.epochs_logged, 1)

    return log


def _tail(path: Path, lines: int = FAILURE_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError:
        return ""


def _script_failed(error: Exception, script: str, job_dir: Path) -> Exception:
    """The job's failure restated for the user's script: what happened, the last
    :data:`FAILURE_TAIL_LINES` lines of the failed host's output and its full log's path."""
    from modelcycle.core.errors import StageError

    text = str(error).removeprefix("stage 'train': ")
    found = re.search(r"host (algo-\d+)", text)
    host = found[1] if found else "algo-1"
    what = text.split("; other hosts stopped")[0].split(". Last lines of")[0].split("\n")[0]
    log = job_dir / "logs" / f"{host}.log"
    return StageError(
        "train",
        f"training script {script} failed ({what}); the use case stays untrained. "
        f"Last {FAILURE_TAIL_LINES} lines of its output:\n{_tail(log)}\nFull log: {log}")


def run_script_job(context: TrainingContext) -> TrainingResult:
    """Run the use case's training script (``training.entry_point``) on local hosts and package
    its model; returns the TrainingResult (metrics parsed from the script's output).

    Raises:
        StageError: the script exited non-zero on a host (the message holds the last
            :data:`FAILURE_TAIL_LINES` lines of its output and the full log's path), ran past
            ``training.max_run``, or wrote nothing to ``SM_MODEL_DIR``.
        ConfigError: a data set script mode cannot ship.
    """
    from modelcycle.core.config import script_source_dir
    from modelcycle.core.datasets import locate_dataset
    from modelcycle.core.entrypoint import job_name
    from modelcycle.core.errors import StageError
    from modelcycle.core.script_metrics import ScriptMetrics
    from modelcycle.core.script_model import (
        copy_source_dir,
        describe_dataset,
        package_script_model,
        script_training_result,
    )
    from modelcycle.platforms.local.container import JobSpec, run_job

    config = context.config
    training = config.training
    script = training.entry_point or ""
    base = Path(context.source_dir) if context.source_dir is not None else Path.cwd()
    work_dir = _work_dir(context)
    name = job_name(training.base_job_name or config.name, context.run_id)
    job_dir = work_dir / "jobs" / name
    if job_dir.exists():
        shutil.rmtree(job_dir)
    source = copy_source_dir(script_source_dir(config, base), job_dir / "source")
    data_dir = locate_dataset(config.data.dataset, settings=config.data)
    spec = JobSpec(
        name=name,
        job_dir=job_dir,
        source_dir=source,
        channels=script_channels(config.data.dataset, data_dir, work_dir / "cache" / "channels"),
        hyperparameters=dict(training.hyperparameters),
        entry_point=script,
        instance_count=training.instance_count,
        environment={"MODELCYCLE_RUN_ID": context.run_id},
        max_run_s=float(training.max_run),
    )
    reporter = context.reporter
    echo = None if reporter.quiet else reporter.stream
    if echo is not None:
        print(f"Starting training job {name}: {script} on {spec.instance_count} local host(s), tree {job_dir}",
              file=echo, flush=True)
    metrics = ScriptMetrics(list(training.metric_definitions), on_points=_metric_logger(_tracker(context)))
    tap = _LineTap(metrics.feed, echo)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelcycle-dataset") as pool:
        described = pool.submit(describe_dataset, config)  # read while the script trains
        try:
            outcome = run_job(spec, stream=tap)
        except StageError as exc:
            if "exited with code" not in str(exc):
                raise
            raise _script_failed(exc, script, job_dir) from None
        finally:
            tap.finish()
        data = described.result()
    model_dir, archive = package_script_model(
        context, outcome.roots[outcome.hosts[0]] / "model", source, data, metrics.final, job_dir / "package")
    job = {"name": name, "platform": "local", "dir": str(job_dir), "hosts": outcome.hosts, "entry_point": script,
           "log": str(job_dir / "logs" / f"{outcome.hosts[0]}.log"), "model_archive": str(outcome.model_archive)}
    if echo is not None:
        print(f"Training job {name} completed in {outcome.duration_s:.1f} s; model {archive}", file=echo, flush=True)
    return script_training_result(context, model_dir, archive, metrics.final, metrics.history, outcome.duration_s, job)
