"""The built-in datasets are plugins like any third party's: found through their entry points,
shaped per the DatasetSpecs, configured by ``data:``, and never imported by the core."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelcycle.core.config import DataConfig
from modelcycle.core.registry import REQUIRED_HOOKS, PluginRegistry, installed_plugins

BUILT_INS = {
    "mnist": "modelcycle.datasets.mnist",
    "fashion-mnist": "modelcycle.datasets.fashion_mnist",
    "cifar10": "modelcycle.datasets.cifar10",
    "csv": "modelcycle.datasets.csv_table",
    "parquet": "modelcycle.datasets.parquet_table",
    "imagefolder": "modelcycle.datasets.imagefolder",
    "npz": "modelcycle.datasets.npz",
    "loader": "modelcycle.datasets.loader",
}


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_each_built_in_is_declared_by_modelcycle_and_implements_the_dataset_hooks(name: str) -> None:
    declared = {p.name: p for p in installed_plugins(("dataset",))}
    assert declared[name].value == BUILT_INS[name] and declared[name].distribution == "modelcycle"
    registry = PluginRegistry()
    plugin = registry.load_plugin("dataset", name)
    assert plugin.__name__ == BUILT_INS[name]
    hooks = {caller.name for caller in registry.pm.get_hookcallers(plugin)}
    assert hooks == REQUIRED_HOOKS["dataset"] == {"dataset_locate", "dataset_load"}


def test_two_built_ins_loaded_together_answer_only_for_themselves(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MODELCYCLE_DATA_DIR", raising=False)
    monkeypatch.setenv("MODELCYCLE_CACHE_DIR", str(tmp_path / "cache"))
    registry = PluginRegistry()
    registry.load_plugin("dataset", "mnist")
    registry.load_plugin("dataset", "cifar10")
    settings = DataConfig(dataset="cifar10", path=str(tmp_path / "nowhere"))
    from modelcycle.core.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="data_batch_1"):  # the CIFAR-10 layout, not IDX
        registry.call_plugin("dataset", "cifar10", "dataset_locate", settings=settings, download=False)


def test_data_config_names_any_plugin_and_carries_its_options() -> None:
    config = DataConfig(dataset="sklearn-digits", options={"test_size": 300})
    assert config.dataset == "sklearn-digits" and config.options == {"test_size": 300}
    assert DataConfig().dataset == "mnist" and DataConfig().options == {}
    with pytest.raises(ValueError, match="dataset"):
        DataConfig(dataset="../mnist")


def test_the_core_dataset_module_imports_no_dataset_plugin() -> None:
    code = ("import sys, modelcycle.core.datasets as d; d.dataset_names(); "
            "print(sorted(m for m in sys.modules if m.startswith('modelcycle.datasets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
