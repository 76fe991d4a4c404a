"""The local container-contract runner: SageMaker's /opt/ml tree, SM_* environment and
model.tar.gz, without Docker — and a model it produced served by the local endpoint."""

from __future__ import annotations

import json
import os
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import SMALL, write_use_case

from modelcycle.core.errors import StageError
from modelcycle.core.markers import hookimpl
from modelcycle.platforms.local.container import JobSpec, _cpu_budget, run_container_job, run_job


class ContainerMode:
    """Routes ``training.mode: container`` to the runner (until the local plugin does)."""

    @hookimpl(tryfirst=True)
    def run_training_job(self, context: Any) -> Any:
        if context.config.training.mode == "container":
            return run_container_job(context)
        return None


def test_a_container_job_trains_packages_and_serves_like_sagemaker(tmp_path: Path, data_dir: Path) -> None:
    import numpy as np
    import orjson

    from modelcycle.core.datasets import load_dataset
    from modelcycle.core.lifecycle import UseCase
    from modelcycle.core.serving.pipeline import InferencePipeline

    directory = write_use_case(tmp_path / "uc", name="box", **SMALL, training={"platform": "local", "mode": "container"})
    use_case = UseCase(directory, plugins=[ContainerMode()])
    outputs = use_case.train()
    run_id = outputs["run_id"]
    job = directory / ".modelcycle" / "jobs" / f"box-{run_id[:12]}"
    root = job / "algo-1" / "opt" / "ml"

    # the tree and config files SageMaker's toolkit would see
    assert sorted(p.name for p in (root / "code").iterdir()) == [
        "modelcycle-0.1.0-py3-none-any.whl", "modelcycle.yaml", "requirements.txt", "train.py"]
    assert sorted(p.name for p in (root / "input" / "data" / "training").iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert sorted(p.name for p in (root / "input" / "data" / "testing").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    hps = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
    assert hps["epochs"] == "1" and hps["batch-size"] == "64" and json.loads(hps["sagemaker_program"]) == "train.py"
    resources = json.loads((root / "input" / "config" / "resourceconfig.json").read_text())
    assert resources["current_host"] == "algo-1" and resources["hosts"] == ["algo-1"]
    assert set(json.loads((root / "input" / "config" / "inputdataconfig.json").read_text())) == {"training", "testing"}
    assert (root / "output" / "data" / "algo-1" / "metrics.json").is_file()
    assert "Test set: Average loss:" in (job / "logs" / "algo-1.log").read_text()

    # model.tar.gz exactly as SageMaker archives /opt/ml/model, extracted into the run
    with tarfile.open(job / "output" / "model.tar.gz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert names == {"model.pth", "modelcycle.json", "code/inference.py", "code/requirements.txt"}
    assert Path(outputs["archive"]).read_bytes() == (job / "output" / "model.tar.gz").read_bytes()
    pipeline = InferencePipeline(outputs["model_dir"])
    assert pipeline.manifest.run_id == run_id
    assert outputs["metrics"]["test_accuracy"] == pytest.approx(pipeline.manifest.metrics["test_accuracy"])
    assert outputs["history"][0]["epoch"] == 1.0

    # the local endpoint serves it through the same handlers
    endpoint = use_case.deploy()
    try:
        result = use_case.score(samples=8)
        test = load_dataset("mnist").test.take(8)
        body = orjson.dumps({"input_data": [{"values": test.images}]}, option=orjson.OPT_SERIALIZE_NUMPY)
        expected = pipeline.predict(pipeline.decode(body, "application/json")).argmax(1)
        assert result.predictions == [int(x) for x in np.asarray(expected)]
        assert endpoint["status"] == "InService"
    finally:
        use_case.cleanup()


def _script_job(tmp_path: Path, script: str, instance_count: int) -> JobSpec:
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.py").write_text(textwrap.dedent(script))
    return JobSpec(name="script-job", job_dir=tmp_path / "job", source_dir=source, channels={},
                   hyperparameters={"epochs": 1, "backend": "gloo"}, instance_count=instance_count, max_run_s=120)


def test_every_host_gets_the_sm_environment_sagemaker_sets(tmp_path: Path) -> None:
    spec = _script_job(tmp_path, """
        import json, os, sys
        names = ["SM_HOSTS", "SM_CURRENT_HOST", "SM_HPS", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_NUM_GPUS",
                 "SM_RESOURCE_CONFIG", "SM_TRAINING_ENV", "SM_USER_ENTRY_POINT", "MASTER_ADDR", "MASTER_PORT",
                 "TRAINING_JOB_NAME", "OMP_NUM_THREADS"]
        record = {name: os.environ[name] for name in names}
        record["argv"] = sys.argv[1:]
        record["cwd"] = os.getcwd()
        out = os.environ["SM_OUTPUT_DATA_DIR"]
        open(os.path.join(out, "env.json"), "w").write(json.dumps(record))
        open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.txt"), "w").write(os.environ["SM_CURRENT_HOST"])
        print("hello from", os.environ["SM_CURRENT_HOST"])
    """, instance_count=2)
    outcome = run_job(spec)
    seen = {host: json.loads((outcome.output_data_dir(host) / "env.json").read_text()) for host in outcome.hosts}
    assert sorted(seen) == ["algo-1", "algo-2"]
    for host, env in seen.items():
        assert json.loads(env["SM_HOSTS"]) == ["algo-1", "algo-2"] and env["SM_CURRENT_HOST"] == host
        assert json.loads(env["SM_HPS"]) == {"epochs": 1, "backend": "gloo"}
        assert env["argv"] == ["--backend", "gloo", "--epochs", "1"]  # sorted, as the training toolkit passes them
        assert env["SM_MODEL_DIR"] == str(outcome.roots[host] / "model")
        assert env["SM_OUTPUT_DATA_DIR"].endswith(f"opt/ml/output/data/{host}")
        assert env["SM_NUM_GPUS"] == "0" and env["TRAINING_JOB_NAME"] == "script-job"
        assert json.loads(env["SM_RESOURCE_CONFIG"])["current_host"] == host
        assert env["MASTER_ADDR"] == "127.0.0.1" and env["cwd"] == str(outcome.roots[host] / "code")
        assert int(env["OMP_NUM_THREADS"]) == max(1, _cpu_budget() // 2)  # each host its share of the cores
    assert seen["algo-1"]["MASTER_PORT"] == seen["algo-2"]["MASTER_PORT"]
    with tarfile.open(outcome.model_archive) as tar:  # only algo-1's model directory is archived
        assert tar.extractfile("weights.txt").read() == b"algo-1"  # type: ignore[union-attr]
    with tarfile.open(outcome.output_archive) as tar:  # type: ignore[arg-type]
        assert {"algo-1/env.json", "algo-2/env.json"} <= set(tar.getnames())


def test_a_failing_host_stops_the_others_and_its_log_tail_is_reported(tmp_path: Path) -> None:
    spec = _script_job(tmp_path, """
        import os, sys, time
        pid_file = os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "pid")
        open(pid_file, "w").write(str(os.getpid()))
        if os.environ["SM_CURRENT_HOST"] == "algo-2":
            time.sleep(1.0)
            print("algo-2 is about to fail: disk on fire")
            open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w").write("RuntimeError: disk on fire\\n\\ntraceback")
            sys.exit(3)
        time.sleep(300)  # rank 0 would wait for its peer forever
    """, instance_count=2)
    started = time.monotonic()
    with pytest.raises(StageError) as failure:
        run_job(spec)
    assert time.monotonic() - started < 60
    message = str(failure.value)
    assert "host algo-2 (rank 1) exited with code 3: RuntimeError: disk on fire" in message
    assert "algo-2 is about to fail: disk on fire" in message
    pid = int((tmp_path / "job" / "algo-1" / "opt" / "ml" / "output" / "data" / "algo-1" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # algo-1 was stopped, not left waiting


def test_a_job_past_max_run_is_stopped(tmp_path: Path) -> None:
    spec = _script_job(tmp_path, "import time; time.sleep(300)\n", instance_count=1)
    spec.max_run_s = 2
    with pytest.raises(StageError, match="ran past max_run"):
        run_job(spec)


def test_two_hosts_need_a_backend_in_config() -> None:
    from modelcycle.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"training: .*instance_count 2 needs a distributed backend.*backend: gloo"):
        from modelcycle.core.config import validate_section, UseCaseConfig

        validate_section(UseCaseConfig, {"name": "x", "training": {"instance_count": 2}}, "", "test")
