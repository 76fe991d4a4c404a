"""Write example PNGs of modelcycle's plots into docs/images/ (deterministic, no data needed).

``python docs/make_images.py [DIR]`` (default: docs/images beside this script). The figures are
drawn by the same functions the product uses (:func:`modelcycle.core.monitoring.plots.history_figure` and
:func:`modelcycle.core.governance.factsheet.training_curves_png`), fed with measurements shaped
like the monitoring store's rows: two evaluations six seconds apart, then five more.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

IMAGES = Path(__file__).resolve().parent / "images"
T0 = 1_764_626_000.0  # 2025-12-01 21:53:20 UTC


def _quality(number: int, seconds: float, accuracy: float, log_loss: float) -> dict[str, Any]:
    return {
        "status": "finished", "monitor": "quality", "run_id": f"evaluation-{number}", "timestamp": T0 + seconds,
        "metrics": {"accuracy": accuracy, "weighted_f_measure": accuracy - 0.004,
                    "weighted_false_positive_rate": (1 - accuracy) / 9, "log_loss": log_loss},
        "thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.8}],
    }


def _drift(number: int, seconds: float, prediction: float) -> dict[str, Any]:
    return {
        "status": "finished", "monitor": "drift", "run_id": f"evaluation-{number}", "timestamp": T0 + seconds,
        "metrics": {"prediction_drift": prediction, "confidence_drift": prediction * 0.6,
                    "mean_intensity_drift": prediction * 0.8},
        "thresholds": [{"metric_id": "prediction_drift", "type": "upper_limit", "value": 0.1}],
    }


def history(evaluations: int) -> list[dict[str, Any]]:
    """``evaluations`` evaluations: the first two six seconds apart, the rest hourly; the last
    ones see drifted traffic (fashion-mnist) and the accuracy falls below its limit."""
    rows = []
    for number in range(1, evaluations + 1):
        seconds = 6.0 * (number - 1) if number <= 2 else 3600.0 * (number - 2)
        drifted = number > 4
        rows.append(_quality(number, seconds, 0.62 if drifted else 0.93 - 0.01 * number, 1.9 if drifted else 0.25 + 0.02 * number))
        rows.append(_drift(number, seconds, 0.42 if drifted else 0.015 * number))
    return rows


def main(argv: list[str]) -> int:
    from modelcycle.core.governance.factsheet import training_curves_png
    from modelcycle.core.monitoring.plots import history_figure

    images = Path(argv[0]) if argv else IMAGES
    images.mkdir(parents=True, exist_ok=True)
    written = []
    for count, name in ((2, "metric_history_2_evaluations.png"), (7, "metric_history.png")):
        path = images / name
        figure = history_figure(history(count))
        figure.tight_layout()
        figure.savefig(path, dpi=80, metadata={"Software": None})
        written.append(path)
    one_epoch = [{"epoch": 1, "train_loss": 0.412, "test_loss": 0.118, "test_accuracy": 0.9641}]
    five_epochs = [{"epoch": e, "train_loss": 0.41 / e ** 0.8, "test_loss": 0.12 / e ** 0.5,
                    "test_accuracy": 0.964 + 0.004 * (1 - 1 / e)} for e in range(1, 6)]
    for rows, name in ((one_epoch, "training_curves_1_epoch.png"), (five_epochs, "training_curves_5_epochs.png")):
        path = images / name
        path.write_bytes(training_curves_png(rows, f"mnist-pytorch ({len(rows)} epoch{'s' if len(rows) > 1 else ''})"))
        written.append(path)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
