"""What resumable training costs: one full-MNIST epoch of the PyTorch plugin's ``fit`` with a
per-epoch checkpoint (weights, optimizer, schedule, RNG states; fsynced and committed
atomically) vs without, the order alternating round by round (A B, B A, …), the same seed on
both sides. Also times the checkpoint commit alone. ``run`` returns the raw seconds per round:
``{"rounds", "with_checkpoint_s", "without_checkpoint_s", "commit_s", "checkpoint_bytes"}``.

Goal: the checkpoint costs ≤ 2 % of the epoch.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet_context  # noqa: E402
from compare import alternate  # noqa: E402

from modelcycle.core.config import Hyperparameters, UseCaseConfig  # noqa: E402
from modelcycle.core.registry import PluginRegistry  # noqa: E402


def _config() -> UseCaseConfig:
    hp = Hyperparameters(epochs=1, batch_size=64, learning_rate=0.005, lr_schedule="onecycle")
    return UseCaseConfig(name="bench", framework="pytorch", hyperparameters=hp)


def _epoch(registry: PluginRegistry, config: UseCaseConfig, checkpoint_root: Path | None, commits: list[float]) -> float:
    """Seconds for ``fit`` (1 epoch + test evaluation), checkpointing under ``checkpoint_root``."""
    context, dataset = quiet_context(registry, config)
    if checkpoint_root is not None:
        shutil.rmtree(checkpoint_root, ignore_errors=True)
        context.checkpoint_dir = checkpoint_root
    model = registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)
    save = context.save_checkpoint

    def timed_save(model: Any, epoch: int) -> None:
        started = time.perf_counter()
        save(model, epoch)
        commits.append(time.perf_counter() - started)

    context.save_checkpoint = timed_save  # type: ignore[method-assign]
    started = time.perf_counter()
    registry.call_first("fit", model=model, dataset=dataset, context=context)
    seconds = time.perf_counter() - started
    if checkpoint_root is not None:
        assert (checkpoint_root / "last.json").exists(), "no checkpoint was committed"
    return seconds


def run(rounds: int = 5) -> dict[str, Any]:
    registry = PluginRegistry()
    registry.load_framework("pytorch")
    config = _config()
    commits: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        root = Path(tmp) / "checkpoint"
        _epoch(registry, config, None, [])  # warm-up: data, torch, caches
        with_s, without_s = alternate(
            lambda: _epoch(registry, config, root, commits), lambda: _epoch(registry, config, None, []), rounds
        )
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {"rounds": rounds, "with_checkpoint_s": with_s, "without_checkpoint_s": without_s, "commit_s": commits,
            "checkpoint_bytes": size}


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
