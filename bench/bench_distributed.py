"""Distributed and container-contract training on this machine (full MNIST, seed ConvNet, 1 epoch).

1. **1 vs 2 local processes**: the training row's job (``bench_training.config``: batch 64 per
   rank, Adam 1e-3, constant rate, seed 1). The 1-process figure is measured exactly as the
   training row measures modelcycle's side — ``bench_training.modelcycle_epoch``, the PyTorch
   plugin's ``fit`` in this process — run in this benchmark, alternating with the 2-process job
   through the local container runner (``instance_count: 2``, ``backend: gloo``,
   DistributedDataParallel, each host given its share of the cores), whose figure is rank 0's
   ``fit`` time (training + the test evaluation) as the entry point records it in
   ``metrics.json``. Both draw the same seeded data order (each rank trains its shard of it).
2. **Fixed cost of the container runner**: the same tiny job (256 images, 1 epoch) through
   ``run_container_job(context)`` vs ``train_in_process(context)`` in one warm process (the
   in-process run re-reads the dataset, as the job's process must): what the runner adds per job
   (host process start, imports, tree, packaging), little exposed to the machine's noise.
3. With ``--command-level`` (slow): a fresh ``python`` process running ``UseCase(dir).train()``
   per mode, as ``modelcycle train`` does, with and without torch imported in the parent.

The order of the two sides alternates round by round (A B, B A, …); ``run`` returns the raw
per-round lists. ``python bench/bench_distributed.py [rounds] [--command-level]`` prints them as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training  # noqa: E402
from _common import REPO  # noqa: E402
from compare import alternate  # noqa: E402

from modelcycle.core.config import UseCaseConfig  # noqa: E402
from modelcycle.core.registry import PluginRegistry  # noqa: E402
from modelcycle.core.training import TrainingContext, TrainingReporter, train_in_process  # noqa: E402
from modelcycle.platforms.local.container import run_container_job  # noqa: E402

#: the training row's job (``bench_training.config``): 1 epoch, batch 64 per rank, Adam 1e-3, constant rate
_CONFIG = {
    "name": "bench-dist",
    "framework": "pytorch",
    "data": {"dataset": "mnist"},
    "hyperparameters": {"epochs": 1, "batch_size": 64, "learning_rate": 1e-3, "lr_schedule": "constant",
                        "seed": bench_training.SEED, "log_interval": 100},
}
TINY = 256
_DRIVER = """
import sys, time
from modelcycle import UseCase, hookimpl
from modelcycle.platforms.local.container import run_container_job

class ContainerMode:  # what the local plugin's run_training_job does for mode: container
    @hookimpl(tryfirst=True)
    def run_training_job(self, context):
        if context.config.training.mode == "container":
            return run_container_job(context)

UseCase(sys.argv[1], plugins=[ContainerMode()]).train(force=True)
"""


_LEAN_DRIVER = """
import sys, uuid
from pathlib import Path

import yaml

from modelcycle.core.config import UseCaseConfig
from modelcycle.core.registry import PluginRegistry
from modelcycle.core.training import TrainingContext, TrainingReporter

root = Path(sys.argv[1])
config = UseCaseConfig.model_validate(yaml.safe_load((root / "modelcycle.yaml").read_text()))
registry = PluginRegistry()
if config.training.mode == "in_process":
    registry.load_framework(config.framework)
from modelcycle.plugins.pytorch.config import PytorchModelConfig  # imports no torch

run_id = uuid.uuid4().hex
context = TrainingContext(config=config, model_config=PytorchModelConfig(), registry=registry,
                          reporter=TrainingReporter(registry.hook, quiet=True), run_id=run_id,
                          output_dir=root / ".modelcycle" / "runs" / run_id)
if config.training.mode == "in_process":
    from modelcycle.core.training import train_in_process

    train_in_process(context)
else:
    from modelcycle.platforms.local.container import run_container_job

    run_container_job(context)
    assert "torch" not in sys.modules, "the parent of a container job should not need torch"
"""


def _config(**training: Any) -> UseCaseConfig:
    return UseCaseConfig.model_validate({**_CONFIG, "training": {"platform": "local", **training}})


def _context(config: UseCaseConfig, registry: PluginRegistry, root: Path) -> TrainingContext:
    from modelcycle.plugins.pytorch.config import PytorchModelConfig

    run_id = uuid.uuid4().hex
    return TrainingContext(
        config=config, model_config=PytorchModelConfig(), registry=registry,
        reporter=TrainingReporter(registry.hook, quiet=True), run_id=run_id,
        output_dir=root / ".modelcycle" / "runs" / run_id,
    )


def container_job(config: UseCaseConfig, registry: PluginRegistry, root: Path) -> dict[str, float]:
    """One job through the container runner: wall seconds, rank 0's fit seconds, accuracy."""
    context = _context(config, registry, root)
    started = time.perf_counter()
    result = run_container_job(context)
    wall = time.perf_counter() - started
    job = Path(result.facts["job"]["dir"])
    record = json.loads((job / "algo-1" / "opt" / "ml" / "output" / "data" / "algo-1" / "metrics.json").read_text())
    shutil.rmtree(job, ignore_errors=True)
    return {"wall_s": wall, "fit_s": float(record["fit_s"]), "accuracy": result.metrics["test_accuracy"]}


def in_process_job(config: UseCaseConfig, registry: PluginRegistry, root: Path) -> dict[str, float]:
    """The same job in this process (the dataset is read again, as a fresh process would)."""
    from modelcycle.core.datasets import clear_cache

    clear_cache()
    context = _context(config, registry, root)
    started = time.perf_counter()
    result = train_in_process(context)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "fit_s": result.duration_s, "accuracy": result.metrics["test_accuracy"]}


def command_job(directory: Path, driver: str = _DRIVER) -> dict[str, float]:
    """A fresh interpreter training the use case in ``directory`` (what ``modelcycle train`` costs)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", driver, str(directory)], check=True, capture_output=True,
                   cwd=directory, timeout=3600)
    return {"wall_s": time.perf_counter() - started}


def _use_case_dirs(root: Path, name: str, data: dict[str, Any]) -> dict[str, Path]:
    dirs = {}
    for mode in ("in_process", "container"):
        directory = root / f"{name}-{mode}"
        directory.mkdir()
        config = {**_CONFIG, "data": data, "training": {"platform": "local", "mode": mode}}
        (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config))
        dirs[mode] = directory
    return dirs


def _pair(dirs: dict[str, Path], rounds: int, driver: str) -> dict[str, list[float]]:
    """Fresh-process wall seconds per round, in-process vs container mode, alternating order."""
    inproc, boxed = alternate(lambda: command_job(dirs["in_process"], driver)["wall_s"],
                              lambda: command_job(dirs["container"], driver)["wall_s"], rounds)
    return {"in_process_s": inproc, "container_s": boxed}


def fixed_cost(registry: PluginRegistry, root: Path, rounds: int) -> dict[str, Any]:
    """The runner's fixed cost, isolated: the same tiny job (256 images, 1 epoch) in-process and
    through the container runner, where training itself takes a fraction of a second; wall
    seconds per round."""
    tiny = {**_CONFIG, "data": {"dataset": "mnist", "train_limit": TINY, "test_limit": TINY}}
    config_in = UseCaseConfig.model_validate({**tiny, "training": {"platform": "local"}})
    config_box = UseCaseConfig.model_validate({**tiny, "training": {"platform": "local", "mode": "container"}})
    inproc, boxed = alternate(lambda: in_process_job(config_in, registry, root),
                              lambda: container_job(config_box, registry, root), rounds)
    return {"train_records": TINY, "in_process_s": [r["wall_s"] for r in inproc],
            "container_s": [r["wall_s"] for r in boxed]}


def hosts(registry: PluginRegistry, root: Path, rounds: int) -> dict[str, Any]:
    """Per round: rank 0's ``fit`` seconds of the 2-process job and the 1-process figure measured
    exactly as the training row measures it (``bench_training.modelcycle_epoch``, same job)."""
    one_config = bench_training.config()
    two_config = _config(mode="container", instance_count=2, backend="gloo")
    bench_training.modelcycle_epoch(registry, one_config)  # warm-up, as bench_training does
    one, two = alternate(lambda: bench_training.modelcycle_epoch(registry, one_config),
                         lambda: container_job(two_config, registry, root), rounds)
    return {
        "one_process_s": [r["seconds"] for r in one], "one_process_accuracy": [r["accuracy"] for r in one],
        "two_processes_s": [r["fit_s"] for r in two], "two_processes_accuracy": [r["accuracy"] for r in two],
        "two_processes_wall_s": [r["wall_s"] for r in two],
    }


def run(rounds: int = 5, command_level: bool = False) -> dict[str, Any]:
    """``{"rounds", "seed", "one_process_s", "two_processes_s", …, "fixed_cost": {…}}`` (raw
    per-round lists); ``command_level`` adds the fresh-process comparisons (slow: 4 × rounds
    full epochs in new interpreters)."""
    if "MODELCYCLE_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
        os.environ["MODELCYCLE_DATA_DIR"] = str(REPO.parent / "shared" / "data")
    registry = PluginRegistry()
    registry.load_framework("pytorch")
    root = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    try:
        result: dict[str, Any] = {"rounds": rounds, "seed": bench_training.SEED, **hosts(registry, root, rounds),
                                  "fixed_cost": fixed_cost(registry, root, rounds)}
        if command_level:
            full = _use_case_dirs(root, "full", _CONFIG["data"])
            tiny = _use_case_dirs(root, "tiny", {"dataset": "mnist", "train_limit": TINY, "test_limit": TINY})
            result["command_level"] = _pair(full, rounds, _DRIVER)
            result["command_level_torch_free_parent"] = {"full_epoch": _pair(full, rounds, _LEAN_DRIVER),
                                                         "tiny_job": _pair(tiny, rounds, _LEAN_DRIVER)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", type=int, nargs="?", default=5)
    parser.add_argument("--command-level", action="store_true", help="add the fresh-process comparisons (slow)")
    args = parser.parse_args()
    print(json.dumps(run(args.rounds, args.command_level), indent=2))
