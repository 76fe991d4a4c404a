"""MLflow-native runs, checked through MLflow's own client and server on the use case's store: the
experiment opens on runs, the run lasts as long as training, the model is logged, registered and
its alias follows the governance stage, and ``mlflow models serve`` answers like the endpoint."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import NO_LOGGED_MODELS, SMALL, isolated_module_env, stop_deployed, write_use_case
from modelcycle import hookimpl
from modelcycle.core.experiments import list_runs
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.mlflow_model import STAGE_ALIASES
from modelcycle.core.serving.pipeline import InferencePipeline
from modelcycle.core.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, RunTracker, wait_for_pending_writes

NAME = "native-mnist"


@pytest.fixture(autouse=True)
def _models_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """This module tests the logged models: ``tracking.log_model`` at its default (true)."""
    monkeypatch.delenv(NO_LOGGED_MODELS[0], raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[dict[str, Any]]:
    """A 1-epoch MNIST use case trained once, with the wall time of training: from the
    ``train()`` call to the end of its stage (the MLflow model is logged and registered after
    that, before ``train()`` returns); its endpoint (deployed by the tests) is stopped by pid
    at the end."""
    with isolated_module_env(tmp_path_factory, data_dir) as env:
        env.delenv(NO_LOGGED_MODELS[0])  # this module tests the logged models
        directory = write_use_case(tmp_path_factory.mktemp("native") / "uc", name=NAME, **SMALL)
        use_case, ended = UseCase(directory), _StageEnd()
        use_case.registry.register(ended)
        started = time.monotonic()
        outputs = use_case.train()
        wall = ended.at["train"] - started
        wait_for_pending_writes()
        try:
            yield {"directory": directory, "outputs": outputs, "wall_s": wall,
                   "client": MlflowClient(outputs["tracking_uri"])}
        finally:
            stop_deployed(directory)


class _StageEnd:
    """An observer plugin noting when each stage ended."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    @hookimpl
    def on_stage_end(self, stage: str, use_case: Any, outputs: dict[str, Any]) -> None:
        self.at[stage] = time.monotonic()


def _experiment(trained: dict[str, Any]) -> Any:
    return trained["client"].get_experiment_by_name(NAME)


def test_the_experiment_opens_on_the_runs_table(trained: dict[str, Any]) -> None:
    assert _experiment(trained).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_an_existing_experiment_without_a_kind_is_tagged_and_one_with_a_kind_is_left_alone(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    client.create_experiment("genai", artifact_location=(tmp_path / "b").as_uri(),
                             tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for experiment in ("old", "genai"):
        tracker = RunTracker(uri, experiment, "r", {"modelcycle.run_id": experiment}).start()
        assert tracker.finish() is not None
    assert client.get_experiment_by_name("old").tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_experiment_by_name("genai").tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_the_run_lasts_as_long_as_training_and_runs_shows_what_mlflow_shows(trained: dict[str, Any]) -> None:
    run = trained["client"].get_run(trained["outputs"]["mlflow_run_id"])
    duration = (run.info.end_time - run.info.start_time) / 1000
    assert run.info.status == "FINISHED"
    assert abs(duration - trained["wall_s"]) <= 0.1 * trained["wall_s"], (duration, trained["wall_s"])
    [listed] = list_runs(UseCase(trained["directory"]))
    assert (listed["mlflow_run_id"], listed["status"]) == (run.info.run_id, run.info.status)
    assert listed["duration_s"] == pytest.approx(duration)


def test_the_model_is_logged_with_signature_and_example_and_linked_to_the_run(trained: dict[str, Any]) -> None:
    import mlflow.models

    client, run_id = trained["client"], trained["outputs"]["mlflow_run_id"]
    models = {m.name: m for m in client.search_logged_models(experiment_ids=[_experiment(trained).experiment_id])}
    assert set(models) == {"pyfunc", "network"}
    assert all(m.source_run_id == run_id and str(m.status) in ("READY", "LoggedModelStatus.READY")
               for m in models.values())
    outputs = {o.model_id for o in client.get_run(run_id).outputs.model_outputs}
    assert outputs == {m.model_id for m in models.values()}
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(trained["outputs"]["tracking_uri"])
    try:
        info = mlflow.models.get_model_info(f"models:/{models['pyfunc'].model_id}")
    finally:
        mlflow.set_tracking_uri(previous)
    assert "python_function" in info.flavors and info.saved_input_example_info is not None
    [spec] = info.signature.inputs.inputs
    assert spec.shape == (-1, 28, 28) and str(spec.type) == "float32"
    assert info.signature.outputs.input_names() == ["prediction", "probability"]


def _version(trained: dict[str, Any]) -> Any:
    [version] = trained["client"].search_model_versions(f"name = '{NAME}'")
    return trained["client"].get_model_version(NAME, version.version)


def test_the_alias_follows_the_governance_stage(trained: dict[str, Any]) -> None:
    version = _version(trained)
    assert version.run_id == trained["outputs"]["mlflow_run_id"] and version.source.startswith("models:/m-")
    assert version.tags == {"modelcycle.run_id": trained["outputs"]["run_id"], "modelcycle.stage": "develop"}
    use_case = UseCase(trained["directory"])
    use_case.deploy()
    assert "registered_model" in use_case.govern()  # develop → test: no alias
    assert _version(trained).aliases == [] and _version(trained).tags["modelcycle.stage"] == "test"
    result = use_case.govern(stage="validate")
    assert result["registered_model"] == {"name": NAME, "version": "1", "alias": "challenger"}
    assert _version(trained).aliases == ["challenger"]
    use_case.govern(stage="operate")
    version = _version(trained)
    assert version.aliases == [STAGE_ALIASES["operate"]] == ["champion"]
    assert version.tags["modelcycle.stage"] == "operate"
    assert trained["client"].get_model_version_by_alias(NAME, "champion").version == version.version


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    for _ in range(600):  # at most 5 minutes on a loaded machine
        if process.poll() is not None:
            pytest.fail(f"mlflow models serve exited ({process.returncode}): {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer /ping: {log.read_text()[-3000:]}")


def test_mlflow_models_serve_answers_raw_pixels_like_the_endpoint(
    trained: dict[str, Any], mnist_test_images: tuple[Any, Any], tmp_path: Path
) -> None:
    if "champion" not in _version(trained).aliases:
        test_the_alias_follows_the_governance_stage(trained)
    images = np.asarray(mnist_test_images[0][:16])  # raw uint8 N×28×28
    body = {"instances": images.tolist()}
    endpoint = UseCase(trained["directory"]).store.read().stage("deploy").outputs
    served = httpx.post(f"{endpoint['url']}/invocations", json=body, timeout=60.0, trust_env=False)
    assert served.status_code == 200, served.text
    endpoint_rows = served.json()["predictions"][0]["values"]
    pipeline = InferencePipeline(trained["outputs"]["model_dir"])
    local = pipeline.predict(images.reshape(-1, 1, 28, 28).astype(np.float32))

    port, log = _free_port(), tmp_path / "serve.log"
    # as from an activated environment: MLflow starts the ``uvicorn`` found on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["outputs"]["tracking_uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_serving(process, url, log)
        answer = httpx.post(f"{url}/invocations", json={"inputs": images.tolist()}, timeout=60.0, trust_env=False)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        assert [row["prediction"] for row in rows] == [row[0] for row in endpoint_rows]
        assert [row["prediction"] for row in rows] == local.argmax(axis=1).tolist()
        np.testing.assert_allclose([row["probability"] for row in rows], [row[1] for row in endpoint_rows], atol=1e-5)
        bad = httpx.post(f"{url}/invocations", json={"inputs": (images.astype(int) * 2).tolist()}, timeout=60.0,
                         trust_env=False)
        assert bad.status_code == 400 and "0..255" in bad.text
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server's own process group (its workers too)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.poll() is not None
