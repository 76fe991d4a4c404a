"""Script mode's cost: ``modelcycle train`` on a SageMaker script vs running the script directly.

The use case is tests/resources/script-mnist-pytorch (the seed ConvNet, full MNIST, 1 epoch):

- *script mode*: a fresh process running ``modelcycle train --force`` on it (the CLI's ``main``,
  from a small driver that also times the parts of the run: see below);
- *direct*: a fresh ``python train.py --epochs 1 ...`` in the job's ``code/`` directory with the
  same ``SM_*`` environment, the same channels and an empty ``SM_MODEL_DIR`` — what a user runs
  by hand (or what SageMaker's container runs).

Both are timed as whole processes, in alternating order (A B B A A B ...) so machine drift hits
both alike. ``overhead`` itemises where script mode's extra time goes, as medians over the rounds:

- ``startup_s``: interpreter start and importing the CLI, until ``main`` is called;
- ``before_job_s``: config, framework plugin, MLflow run, copying the source dir, the channels;
- ``job_s`` - ``direct_s``: the job runner around the same script (its ``/opt/ml`` tree, the
  output pump and metric parsing);
- ``package_s``: the model directory, manifest, checksums and ``model.tar.gz``;
- ``after_s``: ending the MLflow run and recording the stage;
- ``writer_after_s`` (not part of the ratio): how long the detached MLflow writer kept working
  after the command returned. The next measurement starts only once it is done, so one round's
  background writes never land in the next round's timing.

``python bench/bench_script_mode.py [rounds]`` prints the result as JSON.
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
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
RESOURCE = REPO / "tests" / "resources" / "script-mnist-pytorch"
HYPERPARAMETERS = {"epochs": 1, "batch-size": 64, "lr": 0.001, "log-interval": 100}

#: ``modelcycle train`` through the CLI's main, with timers around the parts of a script-mode run
_DRIVER = r"""
import json, sys, time
started = time.perf_counter()
from modelcycle.cli import main
import modelcycle.core.script_model as script_model
import modelcycle.platforms.local.container as container
import modelcycle.platforms.local.script_job as script_job

marks = {"main": time.perf_counter()}
def timed(module, name, key):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        marks.setdefault(key + "_start", begin)
        try:
            return original(*args, **kwargs)
        finally:
            marks[key + "_end"] = time.perf_counter()
    setattr(module, name, wrapper)

timed(container, "run_job", "job")
timed(script_model, "package_script_model", "package")
code = main(["train", "-C", sys.argv[1], "--force"])
marks["end"] = time.perf_counter()
print("BENCH " + json.dumps({k: v - started for k, v in marks.items()}), flush=True)
sys.exit(code)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MODELCYCLE_DATA_DIR", str(REPO.parent / "shared" / "data"))
    env.setdefault("MODELCYCLE_TRACKING__LOG_MODEL", "false")
    return env


def _use_case(root: Path) -> Path:
    directory = root / "uc"
    shutil.copytree(RESOURCE, directory)
    config = yaml.safe_load((directory / "modelcycle.yaml").read_text())
    config["training"]["hyperparameters"] = dict(HYPERPARAMETERS)
    (directory / "modelcycle.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory


def script_mode(directory: Path) -> dict[str, float]:
    """One ``modelcycle train`` process: its wall time and the driver's marks."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _DRIVER, str(directory)], env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"modelcycle train failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    marks = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("BENCH "))[6:])
    from modelcycle.core.tracking import wait_for_pending_writes

    writer_started = time.perf_counter()
    wait_for_pending_writes(directory / ".modelcycle")
    return {
        "writer_after_s": time.perf_counter() - writer_started,
        "wall_s": wall,
        "startup_s": wall - marks["end"] + marks["main"],  # interpreter + imports, and the exit
        "before_job_s": marks["job_start"] - marks["main"],
        "job_s": marks["job_end"] - marks["job_start"],
        "package_s": marks["package_end"] - marks["package_start"],
        "after_s": marks["end"] - marks["package_end"],
    }


def _direct_command(directory: Path, scratch: Path) -> tuple[list[str], dict[str, str], Path]:
    """``python train.py ...`` as the last script-mode job ran it: its code dir, channels and
    ``SM_*`` environment (from the container contract's own functions), a fresh model dir."""
    from modelcycle.platforms.local.container import JobSpec, _cmd_args, _environment

    jobs = directory / ".modelcycle" / "jobs"
    job = max(jobs.iterdir(), key=lambda p: p.stat().st_mtime)
    root = job / "algo-1" / "opt" / "ml"
    channels = {name: [] for name in ("training", "testing")}
    spec = JobSpec(name=job.name, job_dir=job, source_dir=root / "code", channels=channels,
                   hyperparameters=dict(HYPERPARAMETERS), entry_point="train.py")
    env = _environment(spec, "algo-1", ["algo-1"], root, 29500)
    env.update(_env())
    model_dir = scratch / "model"
    env["SM_MODEL_DIR"] = str(model_dir)
    return [sys.executable, "train.py", *_cmd_args(HYPERPARAMETERS)], env, model_dir


def direct(directory: Path, scratch: Path) -> float:
    """One ``python train.py`` process (whole process wall time)."""
    command, env, model_dir = _direct_command(directory, scratch)
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    code = directory / ".modelcycle" / "jobs"
    code = max(code.iterdir(), key=lambda p: p.stat().st_mtime) / "algo-1" / "opt" / "ml" / "code"
    started = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not (model_dir / "model.pth").is_file():
        raise RuntimeError(f"python train.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall


def run(rounds: int = 5) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "src"))
    root = Path(tempfile.mkdtemp(prefix="bench-script-"))
    try:
        directory = _use_case(root)
        script_mode(directory)  # warm-up: the channels' decompressed files, MLflow's store, the OS cache
        runs: list[dict[str, float]] = []
        direct_s: list[float] = []
        for i in range(rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    runs.append(script_mode(directory))
                else:
                    direct_s.append(direct(directory, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    median = statistics.median
    script_s = [r["wall_s"] for r in runs]
    overhead = {key: median(r[key] for r in runs) for key in ("startup_s", "before_job_s", "package_s", "after_s")}
    writer_after_s = median(r["writer_after_s"] for r in runs)
    overhead["job_runner_s"] = median(r["job_s"] for r in runs) - median(direct_s)
    overhead["total_s"] = median(script_s) - median(direct_s)
    return {
        "rounds": rounds,
        "cores": len(os.sched_getaffinity(0)),
        "script_mode_s": [round(s, 3) for s in script_s],
        "direct_s": [round(s, 3) for s in direct_s],
        "job_s": [round(r["job_s"], 3) for r in runs],
        "ratio": {"median": median(script_s) / median(direct_s), "best": min(script_s) / min(direct_s)},
        "overhead": {key: round(value, 3) for key, value in overhead.items()},
        "writer_after_s": round(writer_after_s, 3),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
