"""The training entry point, honouring SageMaker's training-container contract.

SageMaker (and modelcycle's local container runner) runs ``python train.py --epochs 2 ...`` in the
source dir with the ``SM_*`` environment; ``train.py`` is the three-line script
:func:`write_source_dir` ships beside the use case's resolved ``modelcycle.yaml``. It is also
runnable as ``python -m modelcycle.core.entrypoint [--config DIR] [--epochs 1 ...]``.

What it reads (each with a local default, so it also runs outside a container):

- ``SM_MODEL_DIR`` (``./outputs/model``): rank 0 writes the model directory here: weights,
  ``modelcycle.json`` and ``code/`` (SageMaker archives it as ``model.tar.gz``).
- ``SM_CHANNEL_TRAINING`` / ``SM_CHANNEL_TESTING`` (none: the dataset look-up of
  :mod:`modelcycle.core.datasets`): the dataset files.
- ``SM_HOSTS`` / ``SM_CURRENT_HOST`` (``["algo-1"]``): rank = index of the current host, world
  size = number of hosts. With 2+ hosts the framework's process group (``FrameworkInfo.
  process_group``; ``torch.distributed`` for ``pytorch``) is opened with the use case's
  ``training.backend`` (``gloo``), ``MASTER_ADDR`` = the first host and ``MASTER_PORT`` 7777
  unless set (SageMaker's PyTorch containers set both the same way). A framework without a
  process group refuses 2+ hosts.
- ``SM_HPS`` (JSON) and the command line's ``--name value`` pairs: hyperparameters, hyphenated
  or not (``--batch-size 64``), over the config file's; unknown names are reported and ignored.
- ``SM_NUM_GPUS`` (0; training runs on CPU), ``SM_OUTPUT_DATA_DIR`` (``./outputs/data``):
  ``metrics.json`` (rank 0) and, for distributed runs, ``data-shards-rank<r>.npz`` — the record
  indices each rank trained on per epoch. On failure the reason goes to ``SM_OUTPUT_DIR/failure``
  (SageMaker shows it as the job's FailureReason).

Training goes through the same hooks as in-process training
(:func:`modelcycle.core.training.train_in_process`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.plugin_types import FrameworkInfo
    from modelcycle.core.training import TrainingContext, TrainingResult
    from modelcycle.core.wheels import ShippedWheel

__all__ = [
    "CHANNELS",
    "ENTRY_SCRIPT",
    "ContainerEnv",
    "channel_files",
    "job_hyperparameters",
    "job_name",
    "main",
    "parse_container_env",
    "shipped_distributions",
    "source_requirements",
    "training_result",
    "write_source_dir",
]

ENTRY_SCRIPT = "train.py"
CHANNELS = ("training", "testing")
DEFAULT_MASTER_PORT = "7777"
DIST_TIMEOUT_S = 600.0

_ENTRY_SCRIPT_TEXT = '''"""modelcycle training entry point (written by modelcycle).

SageMaker, or modelcycle's local container runner, runs ``python train.py --epochs 2 ...`` here
with the SM_* environment. The use case's resolved config is modelcycle.yaml beside this file.
"""
import sys
from pathlib import Path

from modelcycle.core.entrypoint import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], source_dir=Path(__file__).resolve().parent))
'''

#: Command-line names of the container settings (everything else is a hyperparameter).
_CONTAINER_ARGS = {
    "config": "config",
    "model-dir": "model_dir", "model_dir": "model_dir", "sm-model-dir": "model_dir",
    "train": "training", "training": "training",
    "test": "testing", "testing": "testing",
    "hosts": "hosts", "current-host": "current_host", "current_host": "current_host",
    "num-gpus": "num_gpus", "num_gpus": "num_gpus",
    "output-data-dir": "output_data_dir", "output_data_dir": "output_data_dir",
}
_HP_ALIASES = {"lr": "learning_rate", "test_batchsize": "test_batch_size", "batchsize": "batch_size"}


# -- the container contract ----------------------------------------------------------------
@dataclass(frozen=True)
class ContainerEnv:
    """The container settings and hyperparameters one host was started with."""

    model_dir: Path
    output_data_dir: Path
    output_dir: Path | None
    channels: dict[str, Path]
    hosts: list[str]
    current_host: str
    num_gpus: int
    hyperparameters: dict[str, Any]
    config: Path | None = None
    job_name: str | None = None
    network_interface: str | None = None
    in_container: bool = False
    ignored: list[str] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def world_size(self) -> int:
        return len(self.hosts)


def _value(text: str) -> Any:
    """A command-line value as SageMaker's toolkit renders it (``str(value)``) back to a value."""
    if text in ("None", "null", "~"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _json_env(environ: Mapping[str, str], name: str, default: Any) -> Any:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        from modelcycle.core.errors import ConfigError

        raise ConfigError(f"{name} is not valid JSON: {raw[:200]!r}") from None


def _split_args(argv: Sequence[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """``--name value`` / ``--name=value`` / bare ``--flag`` pairs → (container args, hyperparameters)."""
    container: dict[str, str] = {}
    hyperparameters: dict[str, Any] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("-") or item in ("-", "--"):
            from modelcycle.core.errors import ConfigError

            raise ConfigError(f"unexpected argument {item!r}: arguments are --name value pairs")
        name, sep, value = item.lstrip("-").partition("=")
        if not sep:
            if i + 1 < len(items) and not (items[i + 1].startswith("--") and len(items[i + 1]) > 2):
                value = items[i + 1]
                i += 1
            else:
                value = "true"
        i += 1
        if name in _CONTAINER_ARGS:
            container[_CONTAINER_ARGS[name]] = value
        else:
            hyperparameters[name] = _value(value)
    return container, hyperparameters


def parse_container_env(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> ContainerEnv:
    """Read the contract from ``environ`` (default ``os.environ``) and the command line.

    Command-line container arguments (``--model-dir``, ``--train``, ``--hosts``...) win over the
    ``SM_*`` variables, which win over the local defaults.
    """
    env = os.environ if environ is None else environ
    args, cli_hps = _split_args(argv)
    hps = {k: v for k, v in dict(_json_env(env, "SM_HPS", {})).items() if not k.startswith("sagemaker_")}
    hps.update({k: v for k, v in cli_hps.items() if not k.startswith("sagemaker_")})
    hosts_raw: Any = args.get("hosts") or env.get("SM_HOSTS")
    hosts: list[str]
    if hosts_raw is None:
        hosts = [args.get("current_host") or env.get("SM_CURRENT_HOST") or "algo-1"]
    elif isinstance(hosts_raw, str) and hosts_raw.lstrip().startswith("["):
        hosts = list(json.loads(hosts_raw))
    else:
        hosts = [h.strip() for h in str(hosts_raw).split(",") if h.strip()]
    current = args.get("current_host") or env.get("SM_CURRENT_HOST") or hosts[0]
    if current not in hosts:
        from modelcycle.core.errors import ConfigError

        raise ConfigError(f"current host {current!r} is not one of the hosts {hosts} (SM_CURRENT_HOST / SM_HOSTS)")
    model_dir = args.get("model_dir") or env.get("SM_MODEL_DIR") or "outputs/model"
    if model_dir.startswith("s3://"):  # the TensorFlow estimator's checkpoint location, not ours
        model_dir = env.get("SM_MODEL_DIR") or "outputs/model"
    channels: dict[str, Path] = {}
    for name in CHANNELS:
        value = args.get(name) or env.get(f"SM_CHANNEL_{name.upper()}")
        if value:
            channels[name] = Path(value)
    config = args.get("config") or env.get("MODELCYCLE_CONFIG")
    return ContainerEnv(
        model_dir=Path(model_dir),
        output_data_dir=Path(args.get("output_data_dir") or env.get("SM_OUTPUT_DATA_DIR") or "outputs/data"),
        output_dir=Path(env["SM_OUTPUT_DIR"]) if env.get("SM_OUTPUT_DIR") else None,
        channels=channels,
        hosts=hosts,
        current_host=current,
        num_gpus=int(args.get("num_gpus") or env.get("SM_NUM_GPUS") or 0),
        hyperparameters=hps,
        config=Path(config) if config else None,
        job_name=env.get("TRAINING_JOB_NAME") or _json_env(env, "SM_TRAINING_ENV", {}).get("job_name"),
        network_interface=env.get("SM_NETWORK_INTERFACE_NAME"),
        in_container=any(name.startswith("SM_") for name in env),
    )


# -- what a job ships and passes -------------------------------------------------------------
def job_name(base: str, run_id: str) -> str:
    """A SageMaker-valid job name (``[a-zA-Z0-9-]``, at most 63 chars) tying the job to its run."""
    clean = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")[:38].strip("-") or "modelcycle"
    return f"{clean}-{run_id[:12]}"


def job_hyperparameters(config: Any) -> dict[str, Any]:
    """The hyperparameters a job passes (SageMaker's hyphenated names) plus ``backend`` if set."""
    hps = {name.replace("_", "-"): value for name, value in config.hyperparameters.model_dump().items()}
    if config.training.backend:
        hps["backend"] = config.training.backend
    return hps


def source_requirements(config: Any, info: FrameworkInfo | None = None,
                        shipped: Sequence[ShippedWheel] = ()) -> list[str]:
    """The training source dir's ``requirements.txt`` lines for a prebuilt framework container
    (:func:`~modelcycle.core.providers.container_requirements` of the framework's ``info``,
    loaded when not given); the ``shipped`` wheels (see :func:`write_source_dir`) are installed
    from beside it instead of an index (:func:`~modelcycle.core.wheels.wheel_requirements`).
    ``training.requirements`` replaces them all."""
    from modelcycle.core.providers import container_requirements, installed_framework_info
    from modelcycle.core.wheels import wheel_requirements

    if config.training.requirements is not None:
        return list(config.training.requirements)
    info = info or installed_framework_info(config.framework, tuple(config.disable_plugins))
    lines = container_requirements(info, training=True)
    return wheel_requirements(shipped, lines) if shipped else lines


def shipped_distributions(config: Any) -> list[str]:
    """The distributions a training job installs from shipped wheels: the running modelcycle and
    the distributions providing the use case's framework and dataset plugins."""
    from modelcycle.core.providers import MODELCYCLE, plugin_provider

    names = [MODELCYCLE]
    for kind, name in (("framework", config.framework), ("dataset", config.data.dataset)):
        provider = plugin_provider(kind, name)
        if provider is not None:
            names.append(provider.distribution)
    return list(dict.fromkeys(names))


def _without_secrets(value: Any) -> Any:
    from pydantic import SecretStr

    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if not isinstance(v, SecretStr)}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


#: The config sections a training job needs; serving, tracking, governance and monitoring
#: settings (URIs that may carry credentials among them) stay on the submitting machine.
_SHIPPED_SECTIONS = ("name", "description", "framework", "capture", "model", "data", "hyperparameters",
                     "training", "disable_plugins")


def shipped_config(config: Any) -> dict[str, Any]:
    """The resolved config as the source dir ships it: overrides applied; only the sections
    training needs; no secrets; no local ``data.path`` (the job reads its channels)."""
    dumped = config.model_dump(mode="python")
    data = _without_secrets({key: dumped[key] for key in _SHIPPED_SECTIONS if key in dumped})
    data["data"]["path"] = None
    return json.loads(json.dumps(data, default=str))


def write_source_dir(config: Any, target: Path, info: FrameworkInfo | None = None,
                     base_dir: Path | None = None) -> list[Path]:
    """Write the SageMaker source dir: ``modelcycle.yaml``, ``train.py``, ``requirements.txt``
    (see :func:`source_requirements`; ``info`` is the framework's, loaded when not given), the
    ``model.class`` file (from ``base_dir``, the use case directory) at its relative path, and
    a wheel of each :func:`shipped_distributions` (unless
    ``training.requirements`` replaces the requirements), so that the job installs modelcycle
    without any package index having it.

    Raises:
        ConfigError: a wheel could not be built (the message holds pip's error).
    """
    from modelcycle.core.config import CONFIG_FILE
    from modelcycle.core.wheels import ship_wheels

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    shipped = []
    if config.training.requirements is None:
        shipped = ship_wheels(shipped_distributions(config), target)
        written += [wheel.path for wheel in shipped]
    files = {
        CONFIG_FILE: "# resolved by modelcycle for a training job\n"
        + yaml.safe_dump(shipped_config(config), sort_keys=False),
        ENTRY_SCRIPT: _ENTRY_SCRIPT_TEXT,
        "requirements.txt": "\n".join(source_requirements(config, info, shipped)) + "\n",
    }
    for name, text in files.items():
        (target / name).write_text(text)
        written.append(target / name)
    model_class = config.model.get("class") if isinstance(config.model, dict) else None
    if model_class and base_dir is not None:
        from modelcycle.core.user_code import ship_user_code

        shipped = ship_user_code(str(model_class), Path(base_dir), target)
        if shipped is not None:
            written.append(shipped)
    return written


def channel_files(name: str, directory: Path) -> dict[str, list[Path]]:
    """Split a located dataset's files into the ``training`` and ``testing`` channels."""
    directory = Path(directory)
    if name == "cifar10":
        training = [directory / f"data_batch_{i}" for i in range(1, 6)]
        testing = [directory / "test_batch"]
    elif name in ("mnist", "fashion-mnist"):
        def pick(stem: str) -> Path:
            gz = directory / f"{stem}.gz"
            return gz if gz.is_file() else directory / stem

        training = [pick("train-images-idx3-ubyte"), pick("train-labels-idx1-ubyte")]
        testing = [pick("t10k-images-idx3-ubyte"), pick("t10k-labels-idx1-ubyte")]
    else:
        from modelcycle.core.errors import ConfigError

        raise ConfigError(
            f"dataset '{name}' cannot be shipped to a training container yet (only mnist, fashion-mnist and "
            "cifar10 can); set training.mode: in_process and training.platform: local to train on it")
    missing = [p.name for p in training + testing if not p.is_file()]
    if missing:
        from modelcycle.core.errors import DatasetNotFoundError

        raise DatasetNotFoundError(f"dataset '{name}' in {directory} lacks {', '.join(missing)}")
    return {"training": training, "testing": testing}


def training_result(
    context: TrainingContext, model_archive: Path, record: dict[str, Any], duration_s: float, job: dict[str, Any]
) -> TrainingResult:
    """The TrainingResult of a finished job: ``model_archive`` copied into the run directory and
    extracted there (as an endpoint receives it), ``record`` (rank 0's ``metrics.json``) for the
    metrics, and the job's epochs replayed to this process's ``on_epoch_end`` observers."""
    from modelcycle.core.artifacts import ARCHIVE_NAME, extract_archive, read_manifest
    from modelcycle.core.training import TrainingResult

    output_dir = Path(context.output_dir)
    model_dir = output_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = output_dir / ARCHIVE_NAME
    if Path(model_archive).resolve() != archive.resolve():
        shutil.copyfile(model_archive, archive)
    extract_archive(archive, model_dir)
    manifest = read_manifest(model_dir, expected_framework=context.config.framework)
    history = list(record.get("history") or [])
    for entry in history:
        metrics = {k: float(v) for k, v in entry.items() if k != "epoch"}
        context.hook.on_epoch_end(epoch=int(entry.get("epoch", 0)), metrics=metrics, context=context)
    facts = dict(record.get("facts") or {})
    facts.setdefault("tags", {}).update({"job_name": job.get("name"), "entry_point": ENTRY_SCRIPT})
    facts["job"] = job
    return TrainingResult(
        run_id=manifest.run_id,
        metrics=dict(record.get("metrics") or manifest.metrics),
        history=history,
        summary=str(record.get("summary") or ""),
        duration_s=duration_s,
        model_dir=model_dir,
        archive=archive,
        facts=facts,
    )


# -- training ----------------------------------------------------------------------------------
def _find_config(env: ContainerEnv, source_dir: Path | None) -> Path:
    from modelcycle.core.config import CONFIG_FILE
    from modelcycle.core.errors import ConfigError

    if env.config is not None:
        path = env.config
        if path.is_file() and path.name == CONFIG_FILE:
            return path.parent
        if path.is_dir():
            return path
        raise ConfigError(f"--config {path}: expected a directory holding {CONFIG_FILE} or that file itself")
    for candidate in (source_dir, Path.cwd()):
        if candidate is not None and (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_FILE} beside the entry point or in {Path.cwd()}: ship it in the source dir "
        "(modelcycle does) or pass --config DIR"
    )


def _data_dir(config: Any, env: ContainerEnv, scratch: Path) -> str | None:
    """The directory the dataset is read from: the channels, merged when they are separate."""
    from modelcycle.core.datasets import locate_dataset
    from modelcycle.core.errors import DatasetNotFoundError

    if not env.channels:
        return config.data.path
    dirs = [env.channels[name] for name in CHANNELS if name in env.channels]
    if len({d.resolve() for d in dirs}) == 1:
        return str(dirs[0])
    try:  # the training channel may hold everything
        return str(locate_dataset(config.data.dataset, dirs[0], download=False))
    except DatasetNotFoundError:
        pass
    merged = scratch / "channels"
    merged.mkdir(parents=True, exist_ok=True)
    for directory in dirs:
        for entry in sorted(directory.iterdir()):
            link = merged / entry.name
            if not link.exists():
                link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return str(merged)


def _overrides(env: ContainerEnv, model_fields: set[str], data_path: str | None) -> tuple[dict[str, Any], list[str]]:
    from modelcycle.core.config import Hyperparameters

    overrides: dict[str, Any] = {"data.path": data_path}
    ignored: list[str] = []
    for key, value in env.hyperparameters.items():
        if "." in key:
            overrides[key] = value
            continue
        name = key.replace("-", "_")
        name = _HP_ALIASES.get(name, name)
        if name in Hyperparameters.model_fields:
            overrides[f"hyperparameters.{name}"] = value
        elif name == "backend":
            overrides["training.backend"] = value
        elif name in model_fields:
            overrides[f"model.{name}"] = value
        else:
            ignored.append(key)
    return overrides, ignored


def _no_barrier() -> None:
    """A single host has nobody to wait for."""


def _process_group(env: ContainerEnv, config: Any, info: FrameworkInfo) -> AbstractContextManager[Callable[[], None]]:
    """The process group this host trains in, yielding a ``barrier()``: none for one host; the
    framework's ``process_group`` over ``training.backend`` for 2+, with the rendezvous on the
    first host (``MASTER_ADDR``/``MASTER_PORT``, the network interface SageMaker names).

    Raises:
        ConfigError: 2+ hosts without a backend, or with a framework that trains on one host only.
    """
    from modelcycle.core.errors import ConfigError

    if env.world_size == 1:
        return nullcontext(_no_barrier)
    if config.training.backend is None:
        raise ConfigError(
            f"{env.world_size} hosts {env.hosts} but no distributed backend: pass the hyperparameter "
            "backend=gloo or set training.backend: gloo"
        )
    if info.process_group is None:
        raise ConfigError(
            f"distributed training over {env.world_size} hosts is not implemented by framework "
            f"'{config.framework}' (its framework_info has no process_group): use instance_count 1"
        )
    os.environ.setdefault("MASTER_ADDR", env.hosts[0])
    os.environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
    if env.network_interface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", env.network_interface)
    timeout = float(os.environ.get("MODELCYCLE_DIST_TIMEOUT_S", DIST_TIMEOUT_S))
    return info.process_group(config.training.backend, env.rank, env.world_size, timeout)


def _move_model(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        destination = target / entry.name
        if destination.is_dir():
            shutil.rmtree(destination)
        elif destination.exists():
            destination.unlink()
        shutil.move(str(entry), destination)


def _write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str))
    os.replace(tmp, path)


def _write_shards(env: ContainerEnv, shards: list[Any]) -> None:
    import numpy as np

    arrays = {f"epoch_{i}": np.asarray(s, dtype=np.uint32) for i, s in enumerate(shards, start=1)}
    env.output_data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(env.output_data_dir / f"data-shards-rank{env.rank}.npz", **arrays)


def train(env: ContainerEnv, source_dir: Path | None = None, stream: Any = None) -> dict[str, Any]:
    """Train on this host as the contract in ``env`` says; returns what rank 0 records.

    Raises:
        ConfigError: no config, a bad key or value, or 2+ hosts without a backend.
    """
    from modelcycle.core.config import load_config, validate_section
    from modelcycle.core.providers import framework_info
    from modelcycle.core.registry import PluginRegistry
    from modelcycle.core.training import TrainingContext, TrainingReporter, train_in_process

    config_dir = _find_config(env, source_dir)
    base = load_config(config_dir)
    registry = PluginRegistry(blocked=tuple(base.disable_plugins))
    registry.load_framework(base.framework)
    config_class = registry.pm.hook.model_config_class()
    model_fields = set(getattr(config_class, "model_fields", {}))
    scratch = Path(tempfile.mkdtemp(prefix="modelcycle-job-"))
    try:
        overrides, ignored = _overrides(env, model_fields, _data_dir(base, env, scratch))
        config = load_config(config_dir, overrides)
        model_config = (
            validate_section(config_class, config.model, "model", str(config_dir / "modelcycle.yaml"))
            if config_class is not None else None
        )
        lead = env.rank == 0
        out = stream or sys.stdout
        if lead:
            print(f"modelcycle entry point: host {env.current_host} (rank {env.rank} of {env.world_size}), "
                  f"framework {config.framework}, gpus {env.num_gpus} (training runs on CPU)", file=out, flush=True)
            print(f"  channels {({k: str(v) for k, v in env.channels.items()} or 'none: dataset look-up')}", file=out)
            print(f"  hyperparameters {json.dumps(config.hyperparameters.model_dump())}", file=out, flush=True)
        if ignored:
            print(f"warning: ignoring unknown hyperparameters {', '.join(sorted(ignored))} (known: "
                  "the hyperparameters section, backend, and the model section's keys)", file=sys.stderr, flush=True)
        with _process_group(env, config, framework_info(registry, config.framework)) as barrier:
            run_id = os.environ.get("MODELCYCLE_RUN_ID") or uuid.uuid4().hex
            context = TrainingContext(
                config=config,
                model_config=model_config,
                registry=registry,
                reporter=TrainingReporter(registry.hook, stream=out, quiet=not lead),
                run_id=run_id,
                output_dir=scratch / "run",
                rank=env.rank,
                world_size=env.world_size,
                source_dir=config_dir,
            )
            started = time.perf_counter()
            result = train_in_process(context)
            wall = time.perf_counter() - started
            if "data_shards" in context.state:
                _write_shards(env, context.state["data_shards"])
            record: dict[str, Any] = {}
            if lead:
                assert result.model_dir is not None
                _move_model(result.model_dir, env.model_dir)
                record = {
                    "run_id": run_id,
                    "job_name": env.job_name,
                    "hosts": env.hosts,
                    "metrics": result.metrics,
                    "history": result.history,
                    "fit_s": round(result.duration_s, 3),
                    "train_s": round(wall, 3),
                    "summary": result.summary,
                    "facts": result.facts,
                    "ignored_hyperparameters": ignored,
                }
                _write_json(env.output_data_dir / "metrics.json", record)
                print(f"Saving the model to {env.model_dir}", file=out, flush=True)
            barrier()  # rank 0 saved before anyone leaves
            return record
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_failure(env: ContainerEnv | None, error: BaseException) -> None:
    if env is None or env.output_dir is None:
        return
    try:
        env.output_dir.mkdir(parents=True, exist_ok=True)
        text = f"{type(error).__name__}: {error}\n\n" + "".join(traceback.format_exception(error))[-4000:]
        (env.output_dir / "failure").write_text(text)
    except OSError:
        pass


def main(argv: Sequence[str] | None = None, source_dir: Path | None = None) -> int:
    """Run the entry point; returns the process exit code (0 on success)."""
    from modelcycle.core.errors import ModelcycleError

    parser = argparse.ArgumentParser(
        prog="python -m modelcycle.core.entrypoint",
        description="Train a modelcycle use case under the SageMaker container contract (SM_* variables).",
        epilog="Other --name value pairs are hyperparameters (e.g. --epochs 2 --batch-size 64).",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true")
    known, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if known.help:
        parser.print_help()
        return 0
    env: ContainerEnv | None = None
    try:
        env = parse_container_env(rest)
        train(env, source_dir)
        return 0
    except ModelcycleError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _write_failure(env, exc)
        return 2
    except BaseException as exc:
        traceback.print_exc()
        _write_failure(env, exc)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1


if __name__ == "__main__":
    sys.exit(main())
