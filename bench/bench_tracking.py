"""What MLflow tracking costs a training run: one full-MNIST epoch with tracking on vs off.

Both run the whole ``train`` stage through ``UseCase`` (data, fit, save, package), interleaved
A B A B, each in its own use case retrained with ``force`` (the steady state: the use case's
MLflow store exists). The tracked one also writes the MLflow run from its background thread,
started with the stage. Reported apart: the one-time cost of a use case's first tracked run,
which creates the embedded MLflow store (MLflow migrates a new SQLite database, ~2 s of CPU),
overlapping the training.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from modelcycle.core.lifecycle import UseCase


def _use_case(root: Path, name: str, tracking: bool) -> UseCase:
    directory = root / name
    directory.mkdir()
    template = files("modelcycle") / "examples" / "mnist-pytorch" / "modelcycle.yaml"
    (directory / "modelcycle.yaml").write_text(template.read_text())
    return UseCase(directory, overrides={"hyperparameters.epochs": 1, "tracking.enabled": tracking})


def _train(use_case: UseCase, force: bool) -> float:
    started = time.perf_counter()
    use_case.train(force=force)
    return time.perf_counter() - started


def run(rounds: int = 6) -> dict[str, Any]:
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        untracked, tracked = _use_case(root, "off", False), _use_case(root, "on", True)
        _train(untracked, False)  # warm-up: data, torch, caches
        first_without = _train(_use_case(root, "off-first", False), False)
        first_with = _train(tracked, False)  # creates the use case's MLflow store
        for _ in range(rounds):
            off.append(_train(untracked, True))
            on.append(_train(tracked, True))
    with_s, without_s = statistics.median(on), statistics.median(off)
    return {
        "with_tracking_s": with_s, "without_tracking_s": without_s, "ratio": with_s / without_s,
        "pairs": list(zip(on, off)), "median_pair_ratio": statistics.median(a / b for a, b in zip(on, off)),
        "first_run": {"with_tracking_s": first_with, "without_tracking_s": first_without, "ratio": first_with / first_without},
    }


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 6))
