"""Metrics from a training script's output, the way SageMaker finds them.

SageMaker applies each ``metric_definitions`` entry (``{Name, Regex}``) to every line a training
job prints: the regex's first group, read as a number, is one value of the metric ``Name``.
:class:`ScriptMetrics` does the same, line by line, while the script runs; each match is one
point of a metric series (step = its 1-based count for that metric).

With no definitions configured, the seeds' own lines are parsed (:data:`SEED_METRICS`):

- ``Train Epoch: 1 [6400/60000 (11%)]\\tLoss: 0.903774`` → ``train_loss``, step = samples seen
  since the first epoch began (``(epoch - 1) * total + seen``: the epoch progress);
- ``Test set: Average loss: 0.1020, Accuracy: 9690/10000 (97%)`` (or ``..., 96.9)``) →
  ``test_loss``, and ``accuracy`` as a fraction (0-1) computed from the counts, with
  ``test_accuracy`` (the name built-in runs use, shown by ``modelcycle runs``) the same value;
  step = the epoch (the n-th test result). A test line repeated by a logger with no training
  line in between (``INFO:__main__:Test set: ...``) is counted once.

Each test result also closes one entry of :attr:`ScriptMetrics.history` (``epoch``, the
epoch's last ``train_loss``, ``test_loss``, ``accuracy``, ``test_accuracy``), the per-epoch
curves of the factsheet. :attr:`ScriptMetrics.final` holds each metric's last value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modelcycle.core.config import MetricDefinition

__all__ = ["MetricPoint", "ScriptMetrics", "SEED_METRICS", "SEED_METRIC_DEFINITIONS", "seed_final_metrics"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_TRAIN = re.compile(
    r"Train Epoch:\s*(\d+)\s*\[\s*(\d+)\s*/\s*(\d+)[^\]]*\]\s*,?\s*Loss:\s*(" + _NUMBER + ")", re.IGNORECASE)
_TEST = re.compile(
    r"Test set:\s*Average loss:\s*(" + _NUMBER + r")\s*,\s*Accuracy:\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)

#: what the default parser finds in the seeds' lines (documentation and the README)
SEED_METRICS = ("train_loss", "test_loss", "accuracy", "test_accuracy")

#: The seeds' lines as SageMaker ``metric_definitions``, for a platform whose jobs are parsed by
#: SageMaker (no definitions configured). A regex yields one printed number, so accuracy is the
#: printed percentage (``(97%)``); :func:`seed_final_metrics` makes it the default parser's names.
SEED_METRIC_DEFINITIONS = (
    MetricDefinition(name="train_loss", regex=r"Train Epoch:\s*\d+\s*\[[^\]]*\]\s*,?\s*Loss:\s*(" + _NUMBER + ")"),
    MetricDefinition(name="test_loss", regex=r"Test set:\s*Average loss:\s*(" + _NUMBER + ")"),
    MetricDefinition(name="test_accuracy_percent",
                     regex=r"Test set:.*Accuracy:\s*\d+\s*/\s*\d+\s*\(\s*(" + _NUMBER + r")\s*%\)"),
)


def seed_final_metrics(final: dict[str, float]) -> dict[str, float]:
    """Final values of :data:`SEED_METRIC_DEFINITIONS` under the default parser's names:
    ``test_accuracy_percent`` becomes ``accuracy`` and ``test_accuracy`` as fractions (0-1, to
    the printed percentage's precision); other metrics are kept."""
    metrics = {name: value for name, value in final.items() if name != "test_accuracy_percent"}
    if "test_accuracy_percent" in final:
        metrics["accuracy"] = metrics["test_accuracy"] = final["test_accuracy_percent"] / 100.0
    return metrics


@dataclass(frozen=True)
class MetricPoint:
    """One value of metric ``name`` at ``step``."""

    name: str
    value: float
    step: int


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if not math.isnan(value) else None


@dataclass
class ScriptMetrics:
    """Turns output lines into metric points (see the module docstring).

    Args:
        definitions: SageMaker metric definitions; empty: the seeds' lines are parsed.
        on_points: called with the points each line produced (e.g. to log them to MLflow as the
            script runs); an exception it raises propagates to :meth:`feed`'s caller.
    """

    definitions: list[MetricDefinition] = field(default_factory=list)
    on_points: Callable[[list[MetricPoint]], None] | None = None
    #: every point found, in order
    points: list[MetricPoint] = field(default_factory=list)
    #: one entry per test result (default parser only): ``{"epoch": n, metric: value, ...}``
    history: list[dict[str, float]] = field(default_factory=list)
    _compiled: list[tuple[str, re.Pattern[str]]] = field(default_factory=list, init=False, repr=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _last_train: float | None = field(default=None, init=False, repr=False)
    _last_test: tuple[str, str, str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._compiled = [(d.name, re.compile(d.regex)) for d in self.definitions]

    @property
    def final(self) -> dict[str, float]:
        """Each metric's last value."""
        return {point.name: point.value for point in self.points}

    def feed(self, line: str) -> list[MetricPoint]:
        """Parse one output line; returns (and records) the points it holds."""
        found = self._defined(line) if self._compiled else self._seed(line)
        if found:
            self.points.extend(found)
            if self.on_points is not None:
                self.on_points(found)
        return found

    def feed_lines(self, lines: Iterable[str]) -> None:
        """:meth:`feed` each of ``lines`` (e.g. a finished job's log)."""
        for line in lines:
            self.feed(line)

    def _next_step(self, name: str) -> int:
        self._counts[name] = self._counts.get(name, 0) + 1
        return self._counts[name]

    def _defined(self, line: str) -> list[MetricPoint]:
        found = []
        for name, pattern in self._compiled:
            for match in pattern.finditer(line):
                value = _number(match.group(1))
                if value is not None:  # SageMaker skips values that are no number
                    found.append(MetricPoint(name, value, self._next_step(name)))
        return found

    def _seed(self, line: str) -> list[MetricPoint]:
        train = _TRAIN.search(line)
        if train:
            epoch, seen, total, loss = int(train[1]), int(train[2]), int(train[3]), _number(train[4])
            self._last_test = None
            if loss is None:
                return []
            self._last_train = loss
            return [MetricPoint("train_loss", loss, max(epoch - 1, 0) * total + seen)]
        test = _TEST.search(line)
        if not test or int(test[3]) == 0:
            return []
        key = (test[1], test[2], test[3])
        if key == self._last_test:  # the same result printed again (print + logging)
            return []
        self._last_test = key
        loss, accuracy = _number(test[1]), int(test[2]) / int(test[3])
        epoch = len(self.history) + 1
        found = [MetricPoint("accuracy", accuracy, epoch), MetricPoint("test_accuracy", accuracy, epoch)]
        if loss is not None:
            found.insert(0, MetricPoint("test_loss", loss, epoch))
        entry = {"epoch": float(epoch), **{p.name: p.value for p in found}}
        if self._last_train is not None:
            entry["train_loss"] = self._last_train
        self.history.append(entry)
        return found
