"""What MLflow tracking costs a ``modelcycle train`` call: tracking on vs off, side by side.

Each round times two CLI calls, ``modelcycle train --force`` (1 epoch of full MNIST,
``tracking.log_model`` true, the same seed) on a use case with tracking on, and the same call
with ``--set tracking.enabled=false`` on its twin; the order alternates round by round (on/off,
off/on, ...). The time is the wall time of the whole process, from start to exit — the critical
path a user waits for. With tracking on, a detached writer process applies the run to MLflow (and
logs and registers the model) after ``train`` returns; before the next call the bench waits,
untimed, until that writer is done, so no call pays for the previous one's writes. A warm-up
call per side (untimed) creates the use case's MLflow store and fills the data caches.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

EPOCHS = 1
SEED = 1
_CLI = [sys.executable, "-m", "modelcycle.cli"]


def _use_case(root: Path, name: str) -> Path:
    directory = root / name
    directory.mkdir()
    template = files("modelcycle") / "examples" / "mnist-pytorch" / "modelcycle.yaml"
    (directory / "modelcycle.yaml").write_text(template.read_text())
    return directory


def _train(directory: Path, tracking: bool) -> float:
    """Seconds of one ``modelcycle train`` process (the MLflow writes it leaves are awaited untimed)."""
    settings = [f"hyperparameters.epochs={EPOCHS}", f"hyperparameters.seed={SEED}", "tracking.log_model=true"]
    if not tracking:
        settings.append("tracking.enabled=false")
    command = [*_CLI, "-C", str(directory), *(arg for s in settings for arg in ("--set", s)), "train", "--force"]
    env = {k: v for k, v in os.environ.items() if k != "MODELCYCLE_TRACKING__LOG_MODEL"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    if tracking:
        from modelcycle.core.tracking import wait_for_pending_writes

        wait_for_pending_writes(directory / ".modelcycle")  # untimed: the next call starts on a quiet machine
    return elapsed


def run(rounds: int = 5) -> dict[str, Any]:
    """Time ``rounds`` alternating pairs; returns the per-round seconds of both sides.

    Returns ``{"rounds", "on_s", "off_s", "seed", "epochs", "order", "median_on_s", "median_off_s",
    "median_diff_s", "diff_s"}`` (``diff_s``: on − off per round; ``order``: which side ran first)."""
    on: list[float] = []
    off: list[float] = []
    order: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        root = Path(tmp)
        tracked, untracked = _use_case(root, "on"), _use_case(root, "off")
        _train(tracked, True)  # warm-up: the MLflow store, data and library caches
        _train(untracked, False)
        for index in range(rounds):
            first = "on" if index % 2 == 0 else "off"
            order.append(first)
            for side in (first, "off" if first == "on" else "on"):
                seconds = _train(tracked if side == "on" else untracked, side == "on")
                (on if side == "on" else off).append(seconds)
                print(f"round {index + 1} tracking {side}: {seconds:.2f} s", file=sys.stderr, flush=True)
    diffs = [a - b for a, b in zip(on, off)]
    return {
        "rounds": rounds, "on_s": on, "off_s": off, "seed": SEED, "epochs": EPOCHS, "order": order,
        "median_on_s": statistics.median(on), "median_off_s": statistics.median(off),
        "diff_s": diffs, "median_diff_s": statistics.median(diffs),
    }


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
