"""Metrics from a training script's output: SageMaker metric definitions and the seeds' lines."""

from __future__ import annotations

import pytest

from modelcycle.core.config import MetricDefinition
from modelcycle.core.script_metrics import MetricPoint, ScriptMetrics

#: the seeds' output: the PyTorch MNIST example (tab, "(98%)") and mlmonitor's ("..., 96.9)"),
#: whose test line is printed twice (print, then logging)
SEED_LOG = """\
Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.30
Train Epoch: 1 [6400/60000 (11%)] Loss: 0.903774
Test set: Average loss: 0.1020, Accuracy: 9690/10000, 96.9)
INFO:__main__:Test set: Average loss: 0.1020, Accuracy: 9690/10000, 96.9)

Train Epoch: 2 [6400/60000 (11%)] Loss: 0.187961
Current RunID 1fe942e518344e1b92cc4d82270ad92d
Test set: Average loss: 0.0001, Accuracy: 9826/10000 (98%)
"""


def test_the_seed_lines_become_train_loss_test_loss_and_accuracy_from_the_counts() -> None:
    metrics = ScriptMetrics()
    metrics.feed_lines(SEED_LOG.splitlines())
    assert [p for p in metrics.points if p.name == "train_loss"] == [
        MetricPoint("train_loss", 2.30, 0), MetricPoint("train_loss", 0.903774, 6400),
        MetricPoint("train_loss", 0.187961, 66400),  # epoch progress: (epoch - 1) * total + seen
    ]
    assert [(p.value, p.step) for p in metrics.points if p.name == "accuracy"] == [(0.969, 1), (0.9826, 2)]
    assert [(p.value, p.step) for p in metrics.points if p.name == "test_loss"] == [(0.1020, 1), (0.0001, 2)]
    assert metrics.final == {"train_loss": 0.187961, "test_loss": 0.0001, "accuracy": 0.9826, "test_accuracy": 0.9826}
    assert metrics.history == [
        {"epoch": 1.0, "test_loss": 0.1020, "accuracy": 0.969, "test_accuracy": 0.969, "train_loss": 0.903774},
        {"epoch": 2.0, "test_loss": 0.0001, "accuracy": 0.9826, "test_accuracy": 0.9826, "train_loss": 0.187961},
    ]


def test_a_repeated_result_after_new_training_lines_counts_again() -> None:
    metrics = ScriptMetrics()
    line = "Test set: Average loss: 0.5000, Accuracy: 9000/10000 (90%)"
    metrics.feed_lines([line, "Train Epoch: 2 [640/60000 (1%)]\tLoss: 0.4", line])
    assert [p.step for p in metrics.points if p.name == "accuracy"] == [1, 2]


def test_metric_definitions_replace_the_defaults_one_step_per_match() -> None:
    definitions = [MetricDefinition(Name="train:loss", Regex="Train Loss: (.*?);"),
                   MetricDefinition(Name="test:accuracy", Regex="Test Accuracy: (.*?)%;")]
    seen: list[MetricPoint] = []
    metrics = ScriptMetrics(definitions, on_points=seen.extend)
    metrics.feed_lines([
        "Train Loss: 0.9; Train Loss: 0.8;",  # two matches on one line: two steps
        "Train Epoch: 1 [6400/60000 (11%)] Loss: 0.903774",  # the seed line is no longer parsed
        "Test Accuracy: n/a%;",  # not a number: skipped, as SageMaker does
        "Test Accuracy: 97.5%;",
    ])
    assert seen == metrics.points == [
        MetricPoint("train:loss", 0.9, 1), MetricPoint("train:loss", 0.8, 2), MetricPoint("test:accuracy", 97.5, 1)]
    assert metrics.final == {"train:loss": 0.8, "test:accuracy": 97.5}
    assert metrics.history == []


def test_a_metric_definition_needs_a_group_and_a_valid_regex() -> None:
    with pytest.raises(ValueError, match="needs a group"):
        MetricDefinition(Name="loss", Regex="Loss: [0-9.]+")
    with pytest.raises(ValueError, match="not a regular expression"):
        MetricDefinition(Name="loss", Regex="Loss: ([0-9.]+")
