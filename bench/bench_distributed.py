"""Distributed and container-contract training on this machine (full MNIST, seed ConvNet, 1 epoch).

1. **1 host vs 2 hosts**: the same 1-epoch job through the local container runner with
   ``instance_count`` 1 and 2 (``backend: gloo``, DistributedDataParallel, batch 64 per rank,
   each host given its share of the cores). Per-epoch time is rank 0's ``fit`` time (training +
   the test evaluation), as the entry point records it in ``metrics.json``; wall is the whole job.
2. **Container runner vs in-process**, the same 1-epoch job:
   - *function level*: ``run_container_job(context)`` vs ``train_in_process(context)`` called from
     one warm process (the in-process run re-reads the dataset, as the job's process must);
   - *command level*: a fresh ``python`` process running ``UseCase(dir).train()`` per mode, which is
     what ``modelcycle train`` costs a user today (the lifecycle imports the framework, torch, in the
     parent even when the training runs in a host process);
   - *command level, torch-free parent*: the same without that import (the core change proposed
     with this bench), for the full epoch and for a 256-image job;
   - *fixed cost*: the same comparison on a 256-image job, where training takes well under a
     second: what the runner adds per job (host process start, imports, tree, packaging),
     which is less exposed to the machine's noise than the difference of two full epochs.

Runs are interleaved (A B A B ...) so machine drift hits both alike; the median and the best
(least disturbed) run are reported: on a shared machine, other work only ever adds time.
``python bench/bench_distributed.py [rounds]`` prints the result as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO  # noqa: E402

from modelcycle.core.config import UseCaseConfig  # noqa: E402
from modelcycle.core.registry import PluginRegistry  # noqa: E402
from modelcycle.core.training import TrainingContext, TrainingReporter, train_in_process  # noqa: E402
from modelcycle.platforms.local.container import run_container_job  # noqa: E402

_CONFIG = {
    "name": "bench-dist",
    "framework": "pytorch",
    "data": {"dataset": "mnist"},
    "hyperparameters": {"epochs": 1, "batch_size": 64, "log_interval": 100},
}
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


def _pair(dirs: dict[str, Path], rounds: int, driver: str) -> dict[str, Any]:
    inproc, boxed = _interleave(lambda: command_job(dirs["in_process"], driver),
                                lambda: command_job(dirs["container"], driver), rounds)
    result = {"in_process": _summary(inproc), "container": _summary(boxed)}
    result["overhead"] = {k: v - 1 for k, v in _ratio(result["container"], result["in_process"], "wall_s").items()}
    result["overhead_s"] = {
        stat: result["container"]["wall_s"][stat] - result["in_process"]["wall_s"][stat] for stat in ("median", "best")
    }
    return result


def _interleave(a: Any, b: Any, rounds: int) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    runs_a, runs_b = [], []
    for _ in range(rounds):
        runs_a.append(a())
        runs_b.append(b())
    return runs_a, runs_b


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Median and best (least disturbed) of each measure; the runs themselves."""
    keys = [k for k in runs[0] if k != "accuracy"]
    summary: dict[str, Any] = {
        key: {"median": statistics.median(r[key] for r in runs), "best": min(r[key] for r in runs)} for key in keys
    }
    if "accuracy" in runs[0]:
        summary["accuracy"] = statistics.median(r["accuracy"] for r in runs)
    summary["runs"] = runs
    return summary


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> dict[str, float]:
    return {stat: a[key][stat] / b[key][stat] for stat in ("median", "best")}


def fixed_cost(registry: PluginRegistry, root: Path, rounds: int) -> dict[str, Any]:
    """The runner's fixed cost, isolated: the same tiny job (256 images, 1 epoch) in-process and
    through the container runner, where training itself takes a fraction of a second."""
    tiny = {**_CONFIG, "data": {"dataset": "mnist", "train_limit": 256, "test_limit": 256}}
    config_in = UseCaseConfig.model_validate({**tiny, "training": {"platform": "local"}})
    config_box = UseCaseConfig.model_validate({**tiny, "training": {"platform": "local", "mode": "container"}})
    inproc, boxed = _interleave(lambda: in_process_job(config_in, registry, root),
                                lambda: container_job(config_box, registry, root), rounds)
    return {"in_process": _summary(inproc), "container": _summary(boxed),
            "fixed_cost_s": {stat: statistics.median(b["wall_s"] for b in boxed) - statistics.median(i["wall_s"] for i in inproc)
                             if stat == "median" else min(b["wall_s"] for b in boxed) - min(i["wall_s"] for i in inproc)
                             for stat in ("median", "best")}}


def run(rounds: int = 2) -> dict[str, Any]:
    if "MODELCYCLE_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
        os.environ["MODELCYCLE_DATA_DIR"] = str(REPO.parent / "shared" / "data")
    registry = PluginRegistry()
    registry.load_framework("pytorch")
    root = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    try:
        one, two = _config(mode="container"), _config(mode="container", instance_count=2, backend="gloo")
        fixed = fixed_cost(registry, root, max(3, rounds))
        single, pair = _interleave(lambda: container_job(one, registry, root), lambda: container_job(two, registry, root), rounds)
        inproc, boxed = _interleave(lambda: in_process_job(one, registry, root), lambda: container_job(one, registry, root), rounds)
        full = _use_case_dirs(root, "full", _CONFIG["data"])
        tiny = _use_case_dirs(root, "tiny", {"dataset": "mnist", "train_limit": 256, "test_limit": 256})
        command = _pair(full, rounds, _DRIVER)
        lean = {"full_epoch": _pair(full, rounds, _LEAN_DRIVER), "tiny_job": _pair(tiny, max(3, rounds), _LEAN_DRIVER)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    hosts = {"one_host": _summary(single), "two_hosts": _summary(pair)}
    hosts["speedup_per_epoch"] = _ratio(hosts["one_host"], hosts["two_hosts"], "fit_s")
    boxed_vs = {"in_process": _summary(inproc), "container": _summary(boxed)}
    boxed_vs["overhead"] = {k: v - 1 for k, v in _ratio(boxed_vs["container"], boxed_vs["in_process"], "wall_s").items()}
    fixed["overhead_on_full_epoch"] = {
        stat: fixed["fixed_cost_s"][stat] / boxed_vs["in_process"]["wall_s"][stat] for stat in ("median", "best")
    }
    return {"cores": os.cpu_count(), "rounds": rounds, "hosts": hosts, "container_vs_in_process": boxed_vs,
            "command_level": command, "command_level_torch_free_parent": lean, "fixed_cost": fixed}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2), indent=2))
