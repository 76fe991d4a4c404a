"""Pictures that tell the truth, checked through matplotlib's objects (no pixels compared).

``metric_history.png``: evaluation number on x (two evaluations six seconds apart sit at 1 and
2, not on a calendar), one panel per unit, limits drawn and labelled. Training curves: a 1-epoch
run shows its values, accuracy axes span [0, 1]. The files are really written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from modelcycle.core.governance.factsheet import training_curves_figure
from modelcycle.core.monitoring.plots import HISTORY_PANELS, history_figure, write_plots

T0 = 1_764_626_000.0
PNG = b"\x89PNG\r\n\x1a\n"


def _quality(number: int, seconds: float, accuracy: float) -> dict[str, Any]:
    return {"status": "finished", "monitor": "quality", "run_id": f"e{number}", "timestamp": T0 + seconds,
            "metrics": {"accuracy": accuracy, "weighted_precision": accuracy, "log_loss": 0.3 + number / 10},
            "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.8}],
            "records": {"feedback": 500}, "details": {"confusion_matrix": [[5, 1], [2, 7]]}}


def _drift(number: int, seconds: float, value: float) -> dict[str, Any]:
    return {"status": "finished", "monitor": "drift", "run_id": f"e{number}", "timestamp": T0 + seconds,
            "metrics": {"prediction_drift": value, "confidence_drift": value / 2},
            "thresholds": [{"metric_id": "prediction_drift", "type": "upper_limit", "value": 0.1}]}


def _texts(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_two_evaluations_seconds_apart_sit_at_evaluation_1_and_2() -> None:
    history = [_quality(1, 0, 0.91), _drift(1, 0, 0.02), _quality(2, 6, 0.88), _drift(2, 6, 0.3),
               {"status": "insufficient_data", "monitor": "quality", "run_id": "e3", "timestamp": T0 + 9, "metrics": {}}]
    figure = history_figure(history)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == list(HISTORY_PANELS)  # one panel per unit
    quality, loss, drift = axes
    assert quality.get_xlim() == (0.5, 2.5)  # shared x: evaluation numbers, not dates
    assert [list(line.get_xdata()) for line in quality.lines if line.get_label() == "accuracy"] == [[1, 2]]
    assert "2025-12-01 21:53:20 UTC" in drift.get_xlabel() and "2 = 2025-12-01 21:53:26 UTC" in drift.get_xlabel()
    assert quality.get_ylim() == (0.0, 1.05) and drift.get_ylim() == (0.0, 1.05)
    assert loss.get_ylim()[0] == 0.0 and {line.get_label() for line in loss.lines} == {"log_loss"}
    assert {line.get_label() for line in quality.lines} >= {"accuracy", "weighted_precision"}
    assert "log_loss" not in {line.get_label() for line in quality.lines}  # losses are not shares
    assert "limit: accuracy ≥ 0.8" in _texts(quality) and "limit: prediction_drift ≤ 0.1" in _texts(drift)
    limits = [line for line in drift.lines if line.get_linestyle() == "--"]
    assert [tuple(line.get_ydata()) for line in limits] == [(0.1, 0.1)]
    assert "0.300" in _texts(drift)  # the few points carry their values


def test_history_without_a_finished_measurement_draws_nothing() -> None:
    assert history_figure([{"status": "insufficient_data", "monitor": "quality", "timestamp": T0, "metrics": {}}]) is None


def test_write_plots_writes_real_pngs(tmp_path: Path) -> None:
    history = [_quality(n, 3600 * n, 0.9) for n in range(1, 4)]
    written = write_plots(history[-1:], history, tmp_path / "plots")
    assert sorted(Path(p).name for p in written) == ["confusion_matrix.png", "metric_history.png"]
    for path in written:
        assert Path(path).read_bytes().startswith(PNG)


def test_a_one_epoch_run_shows_its_values_on_an_accuracy_axis_within_0_1() -> None:
    figure = training_curves_figure([{"epoch": 1.0, "train_loss": 2.06, "test_loss": 1.57, "test_accuracy": 0.994}])
    loss_axes, accuracy_axes = figure.axes
    assert accuracy_axes.get_ylim() == (0.0, 1.0)
    assert loss_axes.get_ylim()[0] == 0.0
    assert all(line.get_marker() in ("o", "s") for line in loss_axes.lines + accuracy_axes.lines)
    assert "99.4%" in _texts(accuracy_axes)
    assert {"2.060", "1.570"} <= set(_texts(loss_axes))
    assert list(accuracy_axes.get_xticks()) == [1.0]
    low, high = accuracy_axes.get_xlim()
    assert low < 1 < high


def test_a_longer_run_labels_only_the_final_values() -> None:
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e, "test_accuracy": 1 - 0.1 / e} for e in range(1, 6)]
    loss_axes, accuracy_axes = training_curves_figure(history).axes
    assert _texts(accuracy_axes) == ["98.0%"] and sorted(_texts(loss_axes)) == ["0.200", "0.220"]
    assert accuracy_axes.get_ylim() == (0.0, 1.0)


def test_docs_images_are_drawn_by_the_script(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "docs" / "make_images.py"), str(tmp_path)], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    names = sorted(Path(line.split(" ", 1)[1]).name for line in result.stdout.splitlines())
    assert names == ["metric_history.png", "metric_history_2_evaluations.png", "training_curves_1_epoch.png",
                     "training_curves_5_epochs.png"]
    for name in names:
        assert (tmp_path / name).read_bytes().startswith(PNG)
        assert (REPO / "docs" / "images" / name).read_bytes().startswith(PNG)  # committed examples


@pytest.mark.parametrize("value", [float("nan"), None])
def test_missing_values_are_skipped(value: float | None) -> None:
    row = _quality(1, 0, 0.9)
    row["metrics"]["weighted_precision"] = value
    quality = history_figure([row]).axes[0]
    assert "weighted_precision" not in {line.get_label() for line in quality.lines}
