"""What MLflow tracking costs a training run: one full-MNIST epoch with tracking on vs off.

Both run the whole ``train`` stage through ``UseCase`` (data, fit, save, package), interleaved
A B A B; the tracked one also writes the MLflow run (created on a background thread).
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


def _train(root: Path, name: str, tracking: bool) -> float:
    directory = root / name
    directory.mkdir()
    template = files("modelcycle") / "examples" / "mnist-pytorch" / "modelcycle.yaml"
    (directory / "modelcycle.yaml").write_text(template.read_text())
    use_case = UseCase(directory, overrides={"hyperparameters.epochs": 1, "tracking.enabled": tracking})
    started = time.perf_counter()
    use_case.train()
    return time.perf_counter() - started


def run(rounds: int = 2) -> dict[str, Any]:
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _train(root, "warmup", False)
        for i in range(rounds):
            off.append(_train(root, f"off{i}", False))
            on.append(_train(root, f"on{i}", True))
    with_s, without_s = statistics.median(on), statistics.median(off)
    return {"with_tracking_s": with_s, "without_tracking_s": without_s, "ratio": with_s / without_s, "pairs": list(zip(on, off))}


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2))
