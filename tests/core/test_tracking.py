"""Every train is an MLflow run; runs are compared, swept and the best one deployed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from conftest import SMALL, write_use_case
from modelcycle.core.errors import StageError
from modelcycle.core.experiments import find_run, list_runs, sweep_overrides
from modelcycle.core.lifecycle import UseCase
from modelcycle.core.tracking import wait_for_pending_writes
from modelcycle.platforms.local.endpoints import process_alive


def _run(outputs: dict[str, Any]) -> Any:
    """The MLflow run of a training, once the detached writer has applied what training spooled."""
    wait_for_pending_writes()
    return MlflowClient(outputs["tracking_uri"]).get_run(outputs["mlflow_run_id"])


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    directory = write_use_case(
        tmp_path_factory.mktemp("tracked") / "uc", name="tracked",
        data=SMALL["data"], hyperparameters={**SMALL["hyperparameters"], "epochs": 2},
    )
    return directory, UseCase(directory).train()


def test_a_training_run_records_params_epoch_metrics_tags_inputs_and_artifacts(tracked: tuple[Path, dict[str, Any]]) -> None:
    directory, outputs = tracked
    assert outputs["tracking_uri"] == f"sqlite:///{directory / '.modelcycle' / 'mlflow.db'}"
    run = _run(outputs)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((directory / ".modelcycle" / "mlartifacts").as_uri())
    params = run.data.params
    assert params["learning_rate"] == "0.005" and params["epochs"] == "2" and params["model.hidden_channels"] == "20"
    assert params["data.train_limit"] == "2000"
    assert float(params["preprocessing.mean"].strip("()[],")) == pytest.approx(0.1307, abs=1e-3)
    history = sorted(
        MlflowClient(outputs["tracking_uri"]).get_metric_history(run.info.run_id, "test_accuracy"), key=lambda m: m.step
    )
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(outputs["metrics"]["test_accuracy"])
    tags = run.data.tags
    assert tags["modelcycle.run_id"] == outputs["run_id"]
    assert tags["modelcycle.framework"] == "pytorch" and tags["modelcycle.use_case"] == "tracked"
    assert tags["job_name"] == f"tracked-{outputs['run_id'][:8]}"
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["mnist"]
    assert "train-images-idx3-ubyte.gz" in inputs[0].dataset.schema
    artifacts = {a.path for a in MlflowClient(outputs["tracking_uri"]).list_artifacts(run.info.run_id, "model")}
    assert {"model/modelcycle.json", "model/model.tar.gz"} <= artifacts


def test_both_capture_modes_record_the_same_fact_keys(tmp_path: Path, data_dir: Path) -> None:
    keys = []
    for capture in ("manual", "autolog"):
        directory = write_use_case(tmp_path / capture, name=f"cap-{capture}", capture=capture, **SMALL)
        run = _run(UseCase(directory).train())
        keys.append((set(run.data.params), set(run.data.metrics), {t for t in run.data.tags if t.startswith("modelcycle.") and t != "modelcycle.capture"}))
    assert keys[0] == keys[1]
    # the autolog run left MLflow's process-global state as it found it
    from mlflow.tracking import fluent

    assert fluent._active_experiment_id is None and "MLFLOW_EXPERIMENT_ID" not in os.environ


def test_tracking_can_be_turned_off(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(tmp_path / "off", name="off", tracking={"enabled": False}, **SMALL)
    outputs = UseCase(directory).train()
    assert "mlflow_run_id" not in outputs
    assert not (directory / ".modelcycle" / "mlflow.db").exists()


def test_sweep_param_names_resolve_to_model_or_hyperparameters() -> None:
    assert sweep_overrides("hidden_channels", ["2", "5"]) == [{"model.hidden_channels": 2}, {"model.hidden_channels": 5}]
    assert sweep_overrides("learning_rate", ["0.1"]) == [{"hyperparameters.learning_rate": 0.1}]
    assert sweep_overrides("data.train_limit", ["10"]) == [{"data.train_limit": 10}]


def test_sweep_then_deploy_the_best_run(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(tmp_path / "sweep", name="sweep", **SMALL)
    results = UseCase(directory).sweep("hidden_channels", ["2", "10", "20"])
    assert [r["override"] for r in results] == [{"model.hidden_channels": v} for v in (2, 10, 20)]
    use_case = UseCase(directory)
    runs = list_runs(use_case, sort="test_accuracy")
    accuracies = [r["metrics"]["test_accuracy"] for r in runs]
    assert len(runs) == 3 and accuracies == sorted(accuracies, reverse=True)
    best = runs[0]
    assert best["params"]["model.hidden_channels"] in {"2", "10", "20"}
    assert find_run(use_case, run_id=best["run_id"][:8])["run_id"] == best["run_id"]
    with pytest.raises(StageError, match="matches 0"):
        find_run(use_case, run_id="ffffffffff")
    pid = None
    try:
        endpoint = use_case.deploy(best="test_accuracy")
        pid = endpoint["pid"]
        assert endpoint["run_id"] == best["run_id"]
        assert Path(endpoint["model_dir"]) == Path(best["model_dir"])
        worst = runs[-1]["run_id"]
        switched = use_case.deploy(run_id=worst)
        assert switched["run_id"] == worst and not process_alive(pid)
        pid = switched["pid"]
    finally:
        use_case.cleanup()
    assert pid is not None and not process_alive(pid)


def test_an_unreachable_tracking_store_loses_nothing_but_the_tracking(tmp_path: Path, data_dir: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the store's directory would have to be")
    directory = write_use_case(tmp_path / "broken", name="broken", tracking={"uri": f"sqlite:///{blocker}/mlflow.db"}, **SMALL)
    outputs = UseCase(directory).train()
    assert outputs["mlflow_run_id"] is None
    assert Path(outputs["archive"]).is_file() and outputs["metrics"]["test_accuracy"] > 0.3
    assert UseCase(directory).state().done("train")
