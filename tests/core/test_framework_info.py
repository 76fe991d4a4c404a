"""framework_info: what a framework tells the core instead of the core naming frameworks.

The built-ins and the example adapter answer the hook; a framework without it still works, its
distribution derived from its entry point (a throwaway distribution on ``sys.path`` here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcycle.core.artifacts import Manifest, Provider
from modelcycle.core.errors import ConfigError, PluginContractError, PluginNotFoundError
from modelcycle.core.plugin_types import FrameworkInfo
from modelcycle.core.providers import (
    archive_requirements,
    container_requirements,
    framework_info,
    framework_provider,
    installed_framework_info,
    load_artifact_framework,
)
from modelcycle.core.registry import PluginRegistry

_BARE_PLUGIN = '''
from modelcycle import hookimpl

@hookimpl
def build_model(model_config, dataset, context): return "model"
@hookimpl
def train_step(model, batch, context): return 0.0
@hookimpl
def fit(model, dataset, context): return None
@hookimpl
def evaluate(model, split, context): return {}
@hookimpl
def save_model(model, model_dir, context): return []
@hookimpl
def model_fn(model_dir, context): return "model"
@hookimpl
def predict_fn(data, model, context): return data
'''


@pytest.fixture
def bare_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed framework ``bare-fw`` (distribution ``bare-framework`` 0.3.0) without
    ``framework_info`` and without a model config class."""
    site = tmp_path / "site"
    (site / "bare_fw_plugin").mkdir(parents=True)
    (site / "bare_fw_plugin" / "__init__.py").write_text(_BARE_PLUGIN)
    info = site / "bare_framework-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bare-framework\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[modelcycle.frameworks]\nbare-fw = bare_fw_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    return "bare-fw"


@pytest.mark.parametrize(
    ("name", "extras", "libraries", "distributed"),
    [
        ("pytorch", ("pytorch",), ("torch",), True),
        ("lightning", ("lightning",), ("lightning", "torch"), False),
    ],
)
def test_the_torch_frameworks_describe_themselves(name: str, extras: tuple, libraries: tuple, distributed: bool) -> None:
    info = installed_framework_info(name)
    assert (info.distribution, info.extras, info.libraries, info.distributed) == ("modelcycle", extras, libraries, distributed)
    assert info.training_requirements == ("torchinfo>=1.8",)
    assert "mnist" in info.examples and f"framework: {name}" in info.examples["mnist"]


def test_the_keras_framework_describes_itself() -> None:
    pytest.importorskip("tensorflow")
    info = installed_framework_info("keras")
    assert (info.distribution, info.extras, info.distributed) == ("modelcycle", ("keras",), False)
    assert "keras" in info.libraries and "framework: keras" in info.examples["mnist"]


def test_the_example_adapter_names_its_own_distribution() -> None:
    info = installed_framework_info("sklearn-mlp")
    assert info.distribution == "modelcycle-example-adapter" and info.examples == {}
    registry = PluginRegistry()
    registry.load_framework("sklearn-mlp")
    provider = framework_provider(registry, "sklearn-mlp")
    assert provider == Provider(name="sklearn-mlp", distribution="modelcycle-example-adapter", version="0.1.0")


def test_a_framework_without_framework_info_gets_its_distribution_from_its_entry_point(bare_framework: str) -> None:
    registry = PluginRegistry()
    registry.load_framework(bare_framework)
    info = framework_info(registry, bare_framework)
    assert info == FrameworkInfo(distribution="bare-framework")
    provider = framework_provider(registry, bare_framework)
    assert provider.requirement == "bare-framework==0.3.0"
    assert archive_requirements(provider, "0.1.0") == ["modelcycle==0.1.0", "bare-framework==0.3.0"]


def test_a_wrong_framework_info_answer_is_a_contract_error() -> None:
    registry = PluginRegistry()
    registry.load_framework("sklearn-mlp")

    from modelcycle.core.markers import hookimpl

    class Wrong:
        @hookimpl(tryfirst=True)
        def framework_info(self) -> dict:
            return {"distribution": "x"}

    registry.register(Wrong(), name="wrong")
    with pytest.raises(PluginContractError, match="return a modelcycle.core.plugin_types.FrameworkInfo"):
        framework_info(registry, "sklearn-mlp")


def test_archive_requirements_pin_modelcycle_with_the_extras_of_a_built_in() -> None:
    lightning = Provider(name="lightning", distribution="modelcycle", version="0.1.0", extras=("lightning",))
    assert archive_requirements(lightning, "0.1.0") == ["modelcycle[lightning]==0.1.0"]
    adapter = Provider(name="sklearn-mlp", distribution="modelcycle-example-adapter", version="0.1.0")
    assert archive_requirements(adapter, "0.2.0") == ["modelcycle==0.2.0", "modelcycle-example-adapter==0.1.0"]


def test_container_requirements_come_from_framework_info() -> None:
    lightning = installed_framework_info("lightning")
    training = container_requirements(lightning, modelcycle="0.1.0")
    assert training == ["modelcycle==0.1.0", "lightning>=2.4", "torchmetrics>=1.4", "torchinfo>=1.8"]
    assert "torchinfo>=1.8" not in container_requirements(lightning, modelcycle="0.1.0", training=False)
    assert container_requirements(installed_framework_info("pytorch"), modelcycle="0.1.0", training=False) == [
        "modelcycle==0.1.0"
    ]  # no extra: the container's own torch stays
    adapter = installed_framework_info("sklearn-mlp")
    pinned = Provider(name="sklearn-mlp", distribution="modelcycle-example-adapter", version="0.0.9")
    assert container_requirements(adapter, pinned, "0.1.0") == ["modelcycle==0.1.0", "modelcycle-example-adapter==0.0.9"]
    assert container_requirements(adapter, override=["mine==1"]) == ["mine==1"]


def _manifest(framework: str, provider: Provider | None) -> Manifest:
    return Manifest.model_validate({
        "use_case": "uc", "framework": framework, "framework_version": "1.0", "modelcycle_version": "0.1.0",
        "run_id": "r" * 32, "created_at": "2026-01-01T00:00:00+00:00", "model_files": [],
        "input_schema": {"shape": [1, 28, 28]}, "preprocessing": {"mean": [0.1], "std": [0.3]},
        "classes": ["0", "1"], "dataset": {"name": "mnist", "checksums": {}, "train_records": 1, "test_records": 1},
        "providers": {"framework": provider.model_dump()} if provider else {},
    })


def test_an_artifact_of_a_framework_not_installed_names_the_distribution_to_install() -> None:
    missing = Provider(name="xgb-boost", distribution="modelcycle-xgboost", version="2.1.0", extras=("cpu",))
    with pytest.raises(PluginNotFoundError) as caught:
        load_artifact_framework(PluginRegistry(), _manifest("xgb-boost", missing))
    message = str(caught.value)
    assert "pip install 'modelcycle-xgboost[cpu]==2.1.0'" in message
    assert "installed frameworks:" in message and "pytorch" in message
    # a manifest from before providers were recorded: the registry's own message
    with pytest.raises(PluginNotFoundError, match="framework 'xgb-boost' is not installed"):
        load_artifact_framework(PluginRegistry(), _manifest("xgb-boost", None))


def test_old_manifests_without_providers_still_validate() -> None:
    manifest = _manifest("pytorch", None)
    assert manifest.providers == {}
    assert json.loads(manifest.model_dump_json())["providers"] == {}


def test_two_hosts_need_a_framework_with_a_process_group() -> None:
    from modelcycle.core.config import UseCaseConfig
    from modelcycle.core.entrypoint import _process_group, parse_container_env

    env = parse_container_env(["--hosts", "algo-1,algo-2", "--current-host", "algo-1"], environ={})
    config = UseCaseConfig.model_validate({"name": "uc", "framework": "sklearn-mlp", "training": {"backend": "gloo"}})
    with pytest.raises(ConfigError, match="not implemented by framework 'sklearn-mlp'.*use instance_count 1"):
        _process_group(env, config, installed_framework_info("sklearn-mlp"))
    single = parse_container_env([], environ={})
    with _process_group(single, config, installed_framework_info("sklearn-mlp")) as barrier:
        barrier()  # one host: nothing to wait for


def test_the_factsheet_framework_row_lists_the_declared_libraries_only() -> None:
    from modelcycle.core.governance.templates import _framework_libraries

    recorded = Manifest.runtime_libraries(*installed_framework_info("lightning").libraries)
    assert [name for name, _ in _framework_libraries(recorded)] == ["lightning", "torch"]


@pytest.mark.parametrize(("framework", "config_class", "libraries"), [
    ("pytorch", "PytorchModelConfig", ("torch", "torchinfo")),
    ("lightning", "PytorchModelConfig", ("lightning", "torch")),
    ("keras", "KerasModelConfig", ("keras", "tensorflow")),
])
def test_framework_plugins_load_without_importing_their_library(framework: str, config_class: str,
                                                                 libraries: tuple[str, ...]) -> None:
    """A script-mode run's parent loads the framework only for framework_info and ``model:``:
    that must not import torch or TensorFlow (2-5 s), which only the job itself needs."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from modelcycle.core.providers import installed_framework_info\n"
        "from modelcycle.core.registry import PluginRegistry\n"
        "registry = PluginRegistry()\n"
        f"registry.load_framework({framework!r})\n"
        f"assert registry.pm.hook.model_config_class().__name__ == {config_class!r}\n"
        f"assert installed_framework_info({framework!r}).libraries\n"
        f"print(sorted(m for m in {libraries!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_library_still_fails_the_plugin_load(tmp_path: Path) -> None:
    """require_modules: a plugin importing its library lazily still fails at load, named."""
    from modelcycle.core.plugin_types import require_modules

    require_modules("json", "pathlib")  # installed: nothing happens
    with pytest.raises(ModuleNotFoundError, match="no_such_library_xyz") as caught:
        require_modules("json", "no_such_library_xyz")
    assert caught.value.name == "no_such_library_xyz"
