"""Distributed training: instance_count 2 with backend gloo → two local hosts running DDP, each
on a disjoint shard, rank 0 saving a model without the ``module.`` prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import write_use_case

from modelcycle.core.markers import hookimpl
from modelcycle.platforms.local.container import run_container_job


class ContainerMode:
    @hookimpl(tryfirst=True)
    def run_training_job(self, context: Any) -> Any:
        if context.config.training.mode == "container":
            return run_container_job(context)
        return None


def _train(directory: Path) -> tuple[dict[str, Any], Path]:
    from modelcycle.core.lifecycle import UseCase

    outputs = UseCase(directory, plugins=[ContainerMode()]).train()
    job = next((directory / ".modelcycle" / "jobs").iterdir())
    return outputs, job


def _shards(job: Path) -> list[dict[str, np.ndarray]]:
    files = [job / host / "opt" / "ml" / "output" / "data" / host / f"data-shards-rank{rank}.npz"
             for rank, host in enumerate(("algo-1", "algo-2"))]
    return [dict(np.load(f)) for f in files]


def _assert_disjoint_and_covering(shards: list[dict[str, np.ndarray]], total: int, epochs: int) -> None:
    assert sorted(shards[0]) == sorted(shards[1]) == [f"epoch_{e}" for e in range(1, epochs + 1)]
    for epoch in shards[0]:
        rank0, rank1 = shards[0][epoch], shards[1][epoch]
        assert len(rank0) == len(rank1) == total // 2
        assert np.intersect1d(rank0, rank1).size == 0  # no record seen by both ranks
        assert np.array_equal(np.sort(np.concatenate([rank0, rank1])), np.arange(total))  # and none missed
    if epochs > 1:
        assert not np.array_equal(shards[0]["epoch_1"], shards[0]["epoch_2"])  # reshuffled every epoch


def _assert_loads_without_module_prefix(model_dir: Path) -> float:
    import torch

    from modelcycle.core.serving.pipeline import InferencePipeline

    state = torch.load(model_dir / "model.pth", map_location="cpu", weights_only=True)
    assert state and not any(key.startswith("module.") for key in state)
    pipeline = InferencePipeline(model_dir)
    probabilities = pipeline.predict(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert probabilities.shape == (2, 10) and np.allclose(probabilities.sum(1), 1.0, atol=1e-4)
    return float(pipeline.manifest.metrics["test_accuracy"])


def test_two_local_hosts_train_disjoint_shards_with_ddp(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(
        tmp_path / "uc", name="ddp-small",
        data={"dataset": "mnist", "train_limit": 2000, "test_limit": 500},
        hyperparameters={"epochs": 2, "log_interval": 5},
        training={"platform": "local", "mode": "container", "instance_count": 2, "backend": "gloo"},
    )
    outputs, job = _train(directory)
    _assert_disjoint_and_covering(_shards(job), total=2000, epochs=2)
    _assert_loads_without_module_prefix(Path(outputs["model_dir"]))
    # only rank 0 reports and saves
    rank1 = job / "algo-2" / "opt" / "ml"
    assert list((rank1 / "model").iterdir()) == []
    assert (job / "logs" / "algo-2.log").read_text().strip() == ""
    assert "Train Epoch: 1 [640/2000 " in (job / "logs" / "algo-1.log").read_text()  # global progress
    assert [entry["epoch"] for entry in outputs["history"]] == [1.0, 2.0]


@pytest.mark.slow
def test_two_hosts_on_full_mnist_reach_the_single_process_accuracy_band(tmp_path: Path, data_dir: Path) -> None:
    directory = write_use_case(
        tmp_path / "uc", name="ddp-mnist",
        hyperparameters={"epochs": 2},
        training={"platform": "local", "mode": "container", "instance_count": 2, "backend": "gloo"},
    )
    outputs, job = _train(directory)
    _assert_disjoint_and_covering(_shards(job), total=60_000, epochs=2)
    accuracy = _assert_loads_without_module_prefix(Path(outputs["model_dir"]))
    assert accuracy == pytest.approx(outputs["metrics"]["test_accuracy"])
    assert accuracy >= 0.975, f"2 epochs on 2 hosts reached {accuracy:.4f}"
