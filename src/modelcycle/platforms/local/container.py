"""SageMaker's training-container contract on this machine, without Docker or AWS.

A job gets one ``/opt/ml``-like tree per host under the use case
(``.modelcycle/jobs/<job>/<host>/opt/ml/``): ``code/`` (the source dir: ``train.py``,
``modelcycle.yaml``, ``requirements.txt``), ``input/data/<channel>/`` (links to the dataset
files), ``input/config/{hyperparameters,resourceconfig,inputdataconfig}.json``, ``model/`` and
``output/data/<host>/``. The entry point runs in ``instance_count`` subprocesses (hosts
``algo-1``, ``algo-2``...) with the ``SM_*`` environment SageMaker's training toolkit sets, the
hyperparameters as ``--name value`` arguments, ``MASTER_ADDR``/``MASTER_PORT`` on loopback and
each host's share of the CPU cores. Rank 0's log is streamed; every host's log is kept in
``logs/<host>.log``. If a host fails, the others are stopped (by pid) and the error quotes the
failed host's log tail and its ``output/failure`` file.

Afterwards ``algo-1``'s ``model/`` is archived as ``output/model.tar.gz`` exactly as SageMaker
does (members relative to ``/opt/ml/model``), the output data as ``output/output.tar.gz``, and
the archive is extracted into the run directory, the way a SageMaker endpoint receives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.training import TrainingContext, TrainingResult

__all__ = ["JobSpec", "JobOutcome", "run_job", "run_container_job"]

_GRACE_S = 5.0
_TAIL_LINES = 40


@dataclass
class JobSpec:
    """One training job: what SageMaker's CreateTrainingJob would carry, for local hosts."""

    name: str
    job_dir: Path
    source_dir: Path
    channels: dict[str, list[Path]]
    hyperparameters: dict[str, Any]
    entry_point: str = "train.py"
    instance_count: int = 1
    instance_type: str = "local"
    environment: dict[str, str] = field(default_factory=dict)
    max_run_s: float = 86_400.0


@dataclass
class JobOutcome:
    """Where a finished job left its results."""

    name: str
    job_dir: Path
    hosts: list[str]
    roots: dict[str, Path]
    model_archive: Path
    output_archive: Path | None
    duration_s: float

    def output_data_dir(self, host: str = "algo-1") -> Path:
        return self.roots[host] / "output" / "data" / host


def _cpu_budget() -> int:
    """Cores the job may use: ``OMP_NUM_THREADS`` if set, else the cores this process may run on.
    Each local host gets an equal share, as separate instances would have their own."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _link(source: Path, target: Path) -> None:
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copy2(source, target)


def _cmd_args(hyperparameters: dict[str, Any]) -> list[str]:
    """``--name value`` pairs as SageMaker's training toolkit renders them (sorted, ``str()``)."""
    args: list[str] = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{name}", str(value)]
    return args


def _layout(spec: JobSpec, host: str, hosts: list[str]) -> Path:
    """Create ``host``'s ``/opt/ml`` tree and return it."""
    root = spec.job_dir / host / "opt" / "ml"
    if root.exists():
        shutil.rmtree(root)
    code = root / "code"
    shutil.copytree(spec.source_dir, code)
    for channel, files in spec.channels.items():
        directory = root / "input" / "data" / channel
        directory.mkdir(parents=True)
        for path in files:
            _link(Path(path), directory / Path(path).name)
    config = root / "input" / "config"
    config.mkdir(parents=True)
    all_hps = {
        **spec.hyperparameters,
        "sagemaker_program": spec.entry_point,
        "sagemaker_submit_directory": code.as_uri(),
        "sagemaker_job_name": spec.name,
        "sagemaker_region": "local",
        "sagemaker_container_log_level": 20,
    }
    (config / "hyperparameters.json").write_text(json.dumps({k: json.dumps(v) for k, v in all_hps.items()}, indent=2))
    (config / "resourceconfig.json").write_text(json.dumps(_resource_config(spec, host, hosts), indent=2))
    (config / "inputdataconfig.json").write_text(json.dumps(_input_data_config(spec), indent=2))
    (root / "model").mkdir()
    (root / "output" / "data" / host).mkdir(parents=True)
    return root


def _resource_config(spec: JobSpec, host: str, hosts: list[str]) -> dict[str, Any]:
    return {
        "current_host": host,
        "current_instance_type": spec.instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": hosts,
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": spec.instance_type, "hosts": hosts}
        ],
        "network_interface_name": "lo",
    }


def _input_data_config(spec: JobSpec) -> dict[str, Any]:
    return {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in spec.channels
    }


def _environment(spec: JobSpec, host: str, hosts: list[str], root: Path, master_port: int) -> dict[str, str]:
    """The ``SM_*`` variables of SageMaker's training toolkit, for ``host``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    channels = {name: str(root / "input" / "data" / name) for name in spec.channels}
    output_data_dir = str(root / "output" / "data" / host)
    threads = max(1, _cpu_budget() // len(hosts))
    training_env = {
        "job_name": spec.name,
        "hosts": hosts,
        "current_host": host,
        "hyperparameters": spec.hyperparameters,
        "channel_input_dirs": channels,
        "model_dir": str(root / "model"),
        "output_data_dir": output_data_dir,
        "num_gpus": 0,
        "num_cpus": threads,
        "user_entry_point": spec.entry_point,
        "module_dir": str(root / "code"),
    }
    sm: dict[str, Any] = {
        "SM_HOSTS": hosts,
        "SM_CURRENT_HOST": host,
        "SM_CURRENT_INSTANCE_TYPE": spec.instance_type,
        "SM_NETWORK_INTERFACE_NAME": "lo",
        "SM_HPS": spec.hyperparameters,
        "SM_USER_ENTRY_POINT": spec.entry_point,
        "SM_FRAMEWORK_PARAMS": {},
        "SM_RESOURCE_CONFIG": _resource_config(spec, host, hosts),
        "SM_INPUT_DATA_CONFIG": _input_data_config(spec),
        "SM_OUTPUT_DATA_DIR": output_data_dir,
        "SM_CHANNELS": sorted(spec.channels),
        "SM_MODULE_NAME": Path(spec.entry_point).stem,
        "SM_LOG_LEVEL": 20,
        "SM_INPUT_DIR": str(root / "input"),
        "SM_INPUT_CONFIG_DIR": str(root / "input" / "config"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_NUM_CPUS": threads,
        "SM_NUM_GPUS": 0,
        "SM_MODEL_DIR": str(root / "model"),
        "SM_MODULE_DIR": str(root / "code"),
        "SM_TRAINING_ENV": training_env,
        "SM_USER_ARGS": _cmd_args(spec.hyperparameters),
        **{f"SM_CHANNEL_{name.upper()}": path for name, path in channels.items()},
        **{f"SM_HP_{name.upper().replace('-', '_')}": value for name, value in spec.hyperparameters.items()},
    }
    env.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in sm.items()})
    env.update(
        TRAINING_JOB_NAME=spec.name,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(master_port),
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    env.update(spec.environment)
    return env


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each live process by pid, then SIGKILL those still alive after the grace period."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + _GRACE_S
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _pump(pipe: IO[bytes], log: IO[bytes], stream: IO[str] | None) -> None:
    """Copy rank 0's output into its log file and, line by line, to ``stream``."""
    for raw in iter(pipe.readline, b""):
        log.write(raw)
        log.flush()
        if stream is not None:
            stream.write(raw.decode(errors="replace"))
            stream.flush()
    pipe.close()


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        return "".join(deque(path.read_text(errors="replace").splitlines(keepends=True), maxlen=lines))
    except OSError:
        return ""


def run_job(spec: JobSpec, stream: IO[str] | None = None) -> JobOutcome:
    """Run ``spec`` on local hosts; returns where its results are.

    Raises:
        StageError: a host exited non-zero (the others are stopped; the message holds the
            failed host's log tail and failure file) or the job ran past ``max_run_s``.
    """
    from modelcycle.core.artifacts import package_directory
    from modelcycle.core.errors import StageError

    hosts = [f"algo-{i}" for i in range(1, spec.instance_count + 1)]
    spec.job_dir.mkdir(parents=True, exist_ok=True)
    logs = spec.job_dir / "logs"
    logs.mkdir(exist_ok=True)
    roots = {host: _layout(spec, host, hosts) for host in hosts}
    port = _free_port()
    (spec.job_dir / "job.json").write_text(json.dumps({
        "TrainingJobName": spec.name,
        "HyperParameters": {k: json.dumps(v) for k, v in spec.hyperparameters.items()},
        "ResourceConfig": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count},
        "InputDataConfig": [{"ChannelName": name, "Files": [str(p) for p in files]} for name, files in spec.channels.items()],
        "Hosts": hosts,
    }, indent=2))
    procs: list[subprocess.Popen[bytes]] = []
    handles: list[IO[bytes]] = []
    pumps: list[threading.Thread] = []
    started = time.monotonic()
    try:
        for rank, host in enumerate(hosts):
            root = roots[host]
            log = open(logs / f"{host}.log", "wb")  # noqa: SIM115 - closed below
            handles.append(log)
            lead = rank == 0
            proc = subprocess.Popen(
                [sys.executable, spec.entry_point, *_cmd_args(spec.hyperparameters)],
                cwd=root / "code",
                env=_environment(spec, host, hosts, root, port),
                stdout=subprocess.PIPE if lead else log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            procs.append(proc)
            if lead:
                assert proc.stdout is not None
                pump = threading.Thread(target=_pump, args=(proc.stdout, log, stream), daemon=True)
                pump.start()
                pumps.append(pump)
        failed: tuple[str, int] | None = None
        while True:
            codes = [p.poll() for p in procs]
            bad = [(hosts[i], c) for i, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                failed = bad[0]
                break
            if all(c == 0 for c in codes):
                break
            if time.monotonic() - started > spec.max_run_s:
                _stop(procs)
                raise StageError("train", f"training job {spec.name} ran past max_run ({spec.max_run_s:.0f} s); stopped its hosts")
            time.sleep(0.05)
        if failed is not None:
            _stop(procs)
            for pump in pumps:
                pump.join(timeout=5)
            host, code = failed
            failure = roots[host] / "output" / "failure"
            reason = " ".join(failure.read_text().split("\n\n", 1)[0].split()) if failure.is_file() else ""
            raise StageError(
                "train",
                f"training job {spec.name}: host {host} (rank {hosts.index(host)}) exited with code {code}"
                + (f": {reason}" if reason else "")
                + f"; other hosts stopped. Last lines of {logs / (host + '.log')}:\n{_tail(logs / (host + '.log'))}",
            )
        for pump in pumps:
            pump.join(timeout=30)
    except BaseException:
        _stop(procs)
        raise
    finally:
        for handle in handles:
            handle.close()
    duration = time.monotonic() - started
    output = spec.job_dir / "output"
    model_archive = package_directory(roots[hosts[0]] / "model", output / "model.tar.gz")
    output_data = [roots[h] / "output" / "data" for h in hosts]
    output_archive = None
    if any(any(d.rglob("*")) for d in output_data):
        output_archive = output / "output.tar.gz"
        with tarfile.open(output_archive, "w:gz") as tar:
            for directory in output_data:
                for path in sorted(directory.rglob("*")):
                    if path.is_file():
                        tar.add(path, arcname=path.relative_to(directory).as_posix())
    return JobOutcome(spec.name, spec.job_dir, hosts, roots, model_archive, output_archive, duration)


def _jobs_dir(context: TrainingContext) -> Path:
    output_dir = Path(context.output_dir)
    if output_dir.parent.name == "runs":  # <use case>/.modelcycle/runs/<run_id>
        return output_dir.parent.parent / "jobs"
    return output_dir / "jobs"


def run_container_job(context: TrainingContext) -> TrainingResult:
    """Train ``context``'s use case through the container contract on local hosts.

    Selected by ``training: {platform: local, mode: container}``; ``instance_count`` hosts, with
    ``backend: gloo`` for 2+. Returns a TrainingResult whose ``model_dir`` is the extracted
    ``model.tar.gz`` (served by the local endpoint through the same handlers).
    """
    from modelcycle.core.datasets import locate_dataset
    from modelcycle.core.entrypoint import (
        ENTRY_SCRIPT,
        channel_files,
        job_hyperparameters,
        job_name,
        training_result,
        write_source_dir,
    )
    from modelcycle.core.providers import framework_info

    config = context.config
    name = job_name(config.training.base_job_name or config.name, context.run_id)
    job_dir = _jobs_dir(context) / name
    if job_dir.exists():
        shutil.rmtree(job_dir)
    source = job_dir / "source"
    write_source_dir(config, source, framework_info(context.registry, config.framework), context.source_dir)
    data_dir = locate_dataset(config.data.dataset, config.data.path)
    spec = JobSpec(
        name=name,
        job_dir=job_dir,
        source_dir=source,
        channels=channel_files(config.data.dataset, data_dir),
        hyperparameters=job_hyperparameters(config),
        entry_point=ENTRY_SCRIPT,
        instance_count=config.training.instance_count,
        environment={"MODELCYCLE_RUN_ID": context.run_id},
        max_run_s=float(config.training.max_run),
    )
    reporter = context.reporter
    stream = None if reporter.quiet else reporter.stream
    if stream is not None:
        print(f"Starting training job {name}: {spec.instance_count} local host(s), tree {job_dir}", file=stream, flush=True)
    outcome = run_job(spec, stream=stream)
    metrics_file = outcome.output_data_dir("algo-1") / "metrics.json"
    record = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    job = {"name": name, "platform": "local", "dir": str(job_dir), "hosts": outcome.hosts,
           "model_archive": str(outcome.model_archive)}
    result = training_result(context, outcome.model_archive, record, outcome.duration_s, job)
    if stream is not None:
        print(f"Training job {name} completed in {outcome.duration_s:.1f} s; model artifact {outcome.model_archive}", file=stream, flush=True)
    return result
