"""Tests of modelcycle.core.registry: entry-point loading, plugin contract checks, hook calling,
and a freeze of every hook specification in modelcycle.core.hookspecs.

Fake plugins are installed the way pluggy's own tests do it: ``entry_points`` (as imported by
the registry module) is replaced by a function that returns the real entry points plus tiny
EntryPoint-like objects whose ``load()`` returns an inline plugin object.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import pytest

from modelcycle import hookimpl
from modelcycle.core import hookspecs, registry
from modelcycle.core.errors import PluginContractError, PluginNotFoundError
from modelcycle.core.registry import (
    FRAMEWORK_GROUP,
    PLATFORM_GROUP,
    REQUIRED_FRAMEWORK_HOOKS,
    PluginRegistry,
    installed_plugins,
)

# -- fake entry points ------------------------------------------------------------------------


class FakeDistribution:
    """The part of ``importlib.metadata.Distribution`` the registry reads."""

    def __init__(self, name: str, version: str, extras: tuple[str, ...] = ()) -> None:
        self.metadata = {"Name": name, "Provides-Extra": list(extras)}
        self.version = version


class FakeEntryPoint:
    """An EntryPoint-like object whose ``load()`` calls ``loader`` (it may raise)."""

    def __init__(self, name: str, group: str, loader: Callable[[], Any], dist: FakeDistribution | None = None) -> None:
        self.name = name
        self.group = group
        self.value = f"fake_plugins.{name}"
        self.dist = dist if dist is not None else FakeDistribution(f"modelcycle-{name}", "9.9.9")
        self._loader = loader

    def load(self) -> Any:
        return self._loader()


def install_fakes(monkeypatch: pytest.MonkeyPatch, *fakes: FakeEntryPoint) -> None:
    """Make the registry see the real entry points plus ``fakes`` (a fake wins on a name clash)."""
    real = importlib.metadata.entry_points

    def fake_entry_points(*, group: str) -> list[Any]:
        return [*real(group=group), *(ep for ep in fakes if ep.group == group)]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)


def framework_ep(name: str, plugin: Any) -> FakeEntryPoint:
    return FakeEntryPoint(name, FRAMEWORK_GROUP, lambda: plugin)


def platform_ep(name: str, plugin: Any) -> FakeEntryPoint:
    return FakeEntryPoint(name, PLATFORM_GROUP, lambda: plugin)


# -- inline plugins ---------------------------------------------------------------------------


class FullFramework:
    """Implements every required framework hook (answers are markers, nothing is trained)."""

    @hookimpl
    def build_model(self, model_config: Any, dataset: Any, context: Any) -> Any:
        return "model-from-full-framework"

    @hookimpl
    def train_step(self, model: Any, batch: Any, context: Any) -> float:
        return 0.5

    @hookimpl
    def fit(self, model: Any, dataset: Any, context: Any) -> Any:
        return "fit-result"

    @hookimpl
    def evaluate(self, model: Any, split: Any, context: Any) -> dict[str, float]:
        return {"loss": 0.0, "accuracy": 1.0, "correct": 1.0, "total": 1.0}

    @hookimpl
    def save_model(self, model: Any, model_dir: Path, context: Any) -> list[str]:
        return ["weights.bin"]

    @hookimpl
    def model_fn(self, model_dir: Path, context: Any) -> Any:
        return "loaded"

    @hookimpl
    def predict_fn(self, data: Any, model: Any, context: Any) -> Any:
        return data


class OnlyBuildModel:
    @hookimpl
    def build_model(self, model_config: Any, dataset: Any, context: Any) -> Any:
        return "model"


class MisspelledFramework(FullFramework):
    @hookimpl
    def buildmodel(self, model_config: Any, dataset: Any, context: Any) -> Any:  # typo of build_model
        return "never called"


class NoneAnsweringFramework(FullFramework):
    @hookimpl
    def build_model(self, model_config: Any, dataset: Any, context: Any) -> Any:
        return None


class ServingPlatform:
    """A platform implementing every serving hook; records which of its hooks ran."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []

    @hookimpl
    def deploy_endpoint(self, name: str, model_dir: Path, settings: Any, token: str | None, work_dir: Path) -> dict:
        self.calls.append("deploy_endpoint")
        return {"name": name, "platform": self.name}

    @hookimpl
    def invoke_endpoint(self, endpoint: dict, body: bytes, content_type: str, accept: str, token: str | None) -> tuple:
        self.calls.append("invoke_endpoint")
        return (200, self.name.encode(), "text/plain")

    @hookimpl
    def describe_endpoint(self, endpoint: dict) -> dict:
        self.calls.append("describe_endpoint")
        return {**endpoint, "answered_by": self.name}

    @hookimpl
    def delete_endpoint(self, endpoint: dict) -> int:
        self.calls.append("delete_endpoint")
        return 1


class TrainingOnlyPlatform:
    @hookimpl
    def run_training_job(self, context: Any) -> Any:
        return "trained"


# -- not found / import errors ----------------------------------------------------------------


def test_unknown_framework_lists_installed_frameworks() -> None:
    with pytest.raises(PluginNotFoundError) as info:
        PluginRegistry().load_framework("tensorflow")
    message = str(info.value)
    assert "'tensorflow' is not installed" in message
    assert "pytorch" in message
    assert "local" not in message.split("installed frameworks:")[1].split(".")[0]


def test_unknown_framework_message_lists_every_installed_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, framework_ep("zzfake", FullFramework()))
    with pytest.raises(PluginNotFoundError) as info:
        PluginRegistry().load_framework("jax")
    listed = re.search(r"installed frameworks: ([\w, -]+)\.", str(info.value))
    assert listed, str(info.value)
    names = listed.group(1).split(", ")
    assert {"pytorch", "zzfake"} <= set(names)
    assert names == sorted(names)


def test_unknown_platform_lists_installed_platforms() -> None:
    with pytest.raises(PluginNotFoundError) as info:
        PluginRegistry().load_platform("azure", "serving")
    message = str(info.value)
    assert "platform 'azure' is not installed" in message
    assert re.search(r"installed platforms: .*\blocal\b", message), message


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("keras", "pip install 'modelcycle[keras]'"),
        ("lightning", "pip install 'modelcycle[lightning]'"),
        ("homegrown", "install the dependencies of the package providing 'homegrown' (pip install 'modelcycle')"),
    ],
)
def test_plugin_whose_import_fails_names_the_fix(monkeypatch: pytest.MonkeyPatch, name: str, fix: str) -> None:
    """The hint names the providing distribution's extra of the plugin's name when it has one."""
    def broken_import() -> Any:
        raise ModuleNotFoundError("No module named 'some_heavy_dependency'")

    dist = FakeDistribution("modelcycle", "0.1.0", extras=("keras", "lightning", "sagemaker"))
    install_fakes(monkeypatch, FakeEntryPoint(name, FRAMEWORK_GROUP, broken_import, dist))
    reg = PluginRegistry()
    with pytest.raises(PluginNotFoundError) as info:
        reg.load_framework(name)
    message = str(info.value)
    assert f"framework '{name}' could not be imported" in message
    assert "some_heavy_dependency" in message
    assert fix in message
    assert reg.framework is None


# -- contract checks --------------------------------------------------------------------------


def test_framework_missing_hooks_names_every_missing_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, framework_ep("partial", OnlyBuildModel()))
    reg = PluginRegistry()
    with pytest.raises(PluginContractError) as info:
        reg.load_framework("partial")
    message = str(info.value)
    assert "framework 'partial' is missing required hooks" in message
    listed = re.search(r"missing required hooks: ([a-z_, ]+)\.", message)
    assert listed, message
    assert listed.group(1).split(", ") == ["evaluate", "fit", "model_fn", "predict_fn", "save_model", "train_step"]
    # the broken plugin is not left behind
    assert reg.framework is None
    assert reg.pm.get_plugin("partial") is None


def test_complete_framework_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = FullFramework()
    install_fakes(monkeypatch, framework_ep("complete", plugin))
    reg = PluginRegistry()
    assert reg.load_framework("complete") is plugin
    assert reg.framework == "complete"
    assert reg.call_first("build_model", model_config=None, dataset=None, context=None) == "model-from-full-framework"
    # loading the same name again is a no-op returning the same plugin
    assert reg.load_framework("complete") is plugin


def test_second_framework_in_one_registry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, framework_ep("first", FullFramework()), framework_ep("second", FullFramework()))
    reg = PluginRegistry()
    reg.load_framework("first")
    with pytest.raises(PluginContractError, match="framework 'first' is already loaded"):
        reg.load_framework("second")
    assert reg.pm.get_plugin("second") is None


def test_misspelled_hookimpl_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, framework_ep("typo", MisspelledFramework()))
    reg = PluginRegistry()
    with pytest.raises(PluginContractError) as info:
        reg.load_framework("typo")
    message = str(info.value)
    assert "framework 'typo' is invalid" in message
    assert "buildmodel" in message
    assert "did you mean `build_model`?" in message
    assert isinstance(info.value.__cause__, pluggy.PluginValidationError)
    assert reg.pm.get_plugin("typo") is None
    assert reg.framework is None


def test_misspelled_hookimpl_in_extra_plugin_is_refused() -> None:
    class Observer:
        @hookimpl
        def on_epoch_ends(self, epoch: int) -> None:  # typo of on_epoch_end
            pass

    reg = PluginRegistry()
    observer = Observer()
    with pytest.raises(PluginContractError, match="on_epoch_ends"):
        reg.register(observer, name="observer")
    assert not reg.pm.is_registered(observer)


def test_hookimpl_with_argument_not_in_spec_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class WrongArgs(FullFramework):
        @hookimpl
        def fit(self, model: Any, dataset: Any, context: Any, epochs: int) -> Any:  # 'epochs' is no spec argument
            return None

    install_fakes(monkeypatch, framework_ep("wrongargs", WrongArgs()))
    reg = PluginRegistry()
    with pytest.raises(PluginContractError, match=r"framework 'wrongargs' is invalid(.|\n)*epochs"):
        reg.load_framework("wrongargs")
    assert reg.pm.get_plugin("wrongargs") is None and reg.framework is None


def test_extra_plugin_with_argument_not_in_spec_is_refused() -> None:
    class Observer:
        @hookimpl
        def on_stage_end(self, stage: str, duration: float) -> None:  # 'duration' is no spec argument
            pass

    reg = PluginRegistry()
    observer = Observer()
    with pytest.raises(PluginContractError, match="duration"):
        reg.register(observer, name="observer")
    assert not reg.pm.is_registered(observer)


def test_platform_without_the_roles_hooks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, platform_ep("trainonly", TrainingOnlyPlatform()))
    reg = PluginRegistry()
    assert reg.load_platform("trainonly", "training") is not None
    with pytest.raises(PluginContractError) as info:
        reg.load_platform("trainonly", "serving")
    message = str(info.value)
    assert "platform 'trainonly' cannot serve as the serving platform" in message
    for hook in ("deploy_endpoint", "invoke_endpoint", "describe_endpoint", "delete_endpoint"):
        assert hook in message


# -- calling ----------------------------------------------------------------------------------


def test_call_first_of_an_unanswered_hook_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, framework_ep("quiet", FullFramework()))
    reg = PluginRegistry()
    reg.load_framework("quiet")
    # nobody implements model_config_class: a plain hook call gives None ...
    assert reg.pm.hook.model_config_class() is None
    # ... call_first turns that into an error naming the hook and the framework
    with pytest.raises(PluginContractError) as info:
        reg.call_first("model_config_class")
    message = str(info.value)
    assert "'model_config_class'" in message
    assert "framework 'quiet'" in message


def test_call_first_of_a_hook_answered_with_none_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, framework_ep("nonefw", NoneAnsweringFramework()))
    reg = PluginRegistry()
    reg.load_framework("nonefw")
    with pytest.raises(PluginContractError, match=r"no plugin answered 'build_model' for framework 'nonefw'"):
        reg.call_first("build_model", model_config=None, dataset=None, context=None)


def test_core_defaults_are_trylast() -> None:
    reg = PluginRegistry()
    for name in ("input_fn", "output_fn"):
        impls = getattr(reg.pm.hook, name).get_hookimpls()
        defaults = [impl for impl in impls if impl.plugin_name == "modelcycle.defaults"]
        assert len(defaults) == 1, impls
        assert defaults[0].trylast


def test_default_output_fn_answers_without_a_plugin() -> None:
    reg = PluginRegistry()
    body, content_type = reg.call_first(
        "output_fn", prediction=np.array([[0.25, 0.75]], dtype=np.float32), accept="application/json",
        context=None, scoring_id="abc",
    )
    assert content_type == "application/json"
    document = json.loads(body)
    assert document["predictions"][0]["values"][0][0] == 1
    assert document["scoring_id"] == "abc"


def test_a_plugin_implementing_input_fn_overrides_the_default() -> None:
    class CsvInput:
        def __init__(self) -> None:
            self.seen: list[tuple[bytes, str]] = []

        @hookimpl
        def input_fn(self, body: bytes, content_type: str) -> np.ndarray:
            self.seen.append((body, content_type))
            return np.array([float(x) for x in body.decode().split(",")], dtype=np.float32)

    class TextOutput:
        @hookimpl
        def output_fn(self, prediction: np.ndarray, accept: str) -> tuple[bytes, str]:
            return (str(int(prediction.argmax())).encode(), "text/plain")

    reg = PluginRegistry()
    plugin = CsvInput()
    reg.register(plugin, name="csv")
    reg.register(TextOutput(), name="text")
    # text/csv is not a type the default accepts: had the default run first it would raise
    decoded = reg.call_first("input_fn", body=b"1,2,3", content_type="text/csv", context=None)
    assert decoded.tolist() == [1.0, 2.0, 3.0]
    assert plugin.seen == [(b"1,2,3", "text/csv")]
    encoded = reg.call_first(
        "output_fn", prediction=np.array([[0.1, 0.8, 0.1]]), accept="application/json", context=None, scoring_id=None
    )
    assert encoded == (b"1", "text/plain")


def test_call_platform_calls_only_the_named_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    alpha, beta = ServingPlatform("alpha"), ServingPlatform("beta")
    install_fakes(monkeypatch, platform_ep("alpha", alpha), platform_ep("beta", beta))
    reg = PluginRegistry()
    reg.load_platform("alpha", "serving")
    assert reg.call_platform("alpha", "describe_endpoint", endpoint={"name": "e"})["answered_by"] == "alpha"
    # beta is loaded after alpha's caller was built: pluggy calls the newest plugin first, so a
    # stale caller would let beta answer for alpha
    reg.load_platform("beta", "serving")
    alpha.calls.clear()
    assert reg.call_platform("alpha", "describe_endpoint", endpoint={"name": "e"})["answered_by"] == "alpha"
    assert reg.call_platform("alpha", "delete_endpoint", endpoint={"name": "e"}) == 1
    assert alpha.calls == ["describe_endpoint", "delete_endpoint"]
    assert beta.calls == []
    assert reg.call_platform("beta", "invoke_endpoint", endpoint={}, body=b"", content_type="a", accept="b", token=None) == (
        200, b"beta", "text/plain",
    )
    assert alpha.calls == ["describe_endpoint", "delete_endpoint"]
    assert beta.calls == ["invoke_endpoint"]


def test_call_platform_on_a_platform_not_loaded_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, platform_ep("alpha", ServingPlatform("alpha")))
    reg = PluginRegistry()
    reg.load_platform("alpha", "serving")
    with pytest.raises(PluginContractError, match="platform 'gamma' is not loaded"):
        reg.call_platform("gamma", "describe_endpoint", endpoint={})


def test_call_platform_of_a_hook_the_platform_leaves_unanswered_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    class Silent(ServingPlatform):
        @hookimpl
        def describe_endpoint(self, endpoint: dict) -> dict | None:  # type: ignore[override]
            return None

    install_fakes(monkeypatch, platform_ep("silent", Silent("silent")))
    reg = PluginRegistry()
    reg.load_platform("silent", "serving")
    with pytest.raises(PluginContractError, match="platform 'silent' did not answer 'describe_endpoint'"):
        reg.call_platform("silent", "describe_endpoint", endpoint={})


def test_blocked_plugin_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, framework_ep("blockedfw", FullFramework()))
    reg = PluginRegistry(blocked=("blockedfw",))
    assert reg.pm.is_blocked("blockedfw")
    with pytest.raises(PluginNotFoundError, match=r"framework 'blockedfw' is disabled .*disable_plugins"):
        reg.load_framework("blockedfw")
    assert reg.framework is None


def test_blocked_platform_is_not_loaded() -> None:
    reg = PluginRegistry(blocked=("local",))
    with pytest.raises(PluginNotFoundError, match=r"platform 'local' is disabled"):
        reg.load_platform("local", "serving")


# -- the built-in plugins ---------------------------------------------------------------------


def test_installed_plugins_lists_the_builtin_plugins() -> None:
    version = importlib.metadata.version("modelcycle")
    found = {(p.kind, p.name): p for p in installed_plugins()}
    pytorch = found[("framework", "pytorch")]
    local = found[("platform", "local")]
    assert pytorch.group == FRAMEWORK_GROUP and local.group == PLATFORM_GROUP
    assert pytorch.value == "modelcycle.plugins.pytorch.plugin"
    assert local.value == "modelcycle.platforms.local.plugin"
    for plugin in (pytorch, local):
        assert plugin.distribution == "modelcycle"
        assert plugin.version == version
        assert re.fullmatch(r"\d+(\.\d+)*\S*", plugin.version)


def test_installed_plugins_includes_third_party_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, platform_ep("cloudy", ServingPlatform("cloudy")))
    found = {p.name: p for p in installed_plugins()}
    assert found["cloudy"].kind == "platform"
    assert (found["cloudy"].distribution, found["cloudy"].version) == ("modelcycle-cloudy", "9.9.9")
    assert "pytorch" in found and "local" in found


def test_installed_plugins_imports_no_plugin() -> None:
    code = (
        "import sys, json\n"
        "from modelcycle.core.registry import installed_plugins\n"
        "names = [p.name for p in installed_plugins()]\n"
        "print(json.dumps({'names': names, 'loaded': sorted(m for m in ('torch', 'modelcycle.plugins.pytorch.plugin',"
        " 'modelcycle.platforms.local.plugin') if m in sys.modules)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"pytorch", "local"} <= set(report["names"])
    assert report["loaded"] == []


def test_builtin_pytorch_framework_and_local_platform_load() -> None:
    reg = PluginRegistry()
    plugin = reg.load_framework("pytorch")
    assert reg.framework == "pytorch"
    assert plugin.__name__ == "modelcycle.plugins.pytorch.plugin"
    assert REQUIRED_FRAMEWORK_HOOKS <= {c.name for c in reg.pm.get_hookcallers(plugin)}
    from modelcycle.plugins.pytorch.config import PytorchModelConfig

    assert reg.call_first("model_config_class") is PytorchModelConfig
    reg.load_platform("local", "training")
    reg.load_platform("local", "serving")


# -- spec freeze ------------------------------------------------------------------------------

_FR = {"firstresult": True, "historic": False, "warn_on_impl": None, "warn_on_impl_args": None}
_ALL = {"firstresult": False, "historic": False, "warn_on_impl": None, "warn_on_impl_args": None}

#: (spec class, hook, arguments after self, spec opts) — today's exact contract.
FROZEN_SPECS = [
    ("FrameworkSpecs", "model_config_class", (), _FR),
    ("FrameworkSpecs", "framework_info", (), _FR),
    ("FrameworkSpecs", "build_model", ("model_config", "dataset", "context"), _FR),
    ("FrameworkSpecs", "train_step", ("model", "batch", "context"), _FR),
    ("FrameworkSpecs", "fit", ("model", "dataset", "context"), _FR),
    ("FrameworkSpecs", "evaluate", ("model", "split", "context"), _FR),
    ("FrameworkSpecs", "save_model", ("model", "model_dir", "context"), _FR),
    ("FrameworkSpecs", "save_checkpoint", ("model", "directory", "context"), _FR),
    ("FrameworkSpecs", "load_checkpoint", ("model", "directory", "context"), _FR),
    ("FrameworkSpecs", "summarize_model", ("model", "context"), _FR),
    ("ServingSpecs", "model_fn", ("model_dir", "context"), _FR),
    ("ServingSpecs", "input_fn", ("body", "content_type", "context"), _FR),
    ("ServingSpecs", "predict_fn", ("data", "model", "context"), _FR),
    ("ServingSpecs", "output_fn", ("prediction", "accept", "context", "scoring_id"), _FR),
    ("ServingSpecs", "script_handler_defaults", ("model_dir", "context"), _FR),
    ("FactsSpecs", "collect_facts", ("context", "stage"), _ALL),
    ("LifecycleSpecs", "on_stage_start", ("stage", "use_case"), _ALL),
    ("LifecycleSpecs", "on_stage_end", ("stage", "use_case", "outputs"), _ALL),
    ("LifecycleSpecs", "on_stage_error", ("stage", "use_case", "error"), _ALL),
    ("LifecycleSpecs", "on_epoch_end", ("epoch", "metrics", "context"), _ALL),
    ("PlatformSpecs", "run_training_job", ("context",), _FR),
    ("PlatformSpecs", "deploy_endpoint", ("name", "model_dir", "settings", "token", "work_dir", "monitoring"), _FR),
    ("PlatformSpecs", "invoke_endpoint", ("endpoint", "body", "content_type", "accept", "token"), _FR),
    ("PlatformSpecs", "describe_endpoint", ("endpoint",), _FR),
    ("PlatformSpecs", "delete_endpoint", ("endpoint",), _FR),
    ("PlatformSpecs", "export_pipeline", ("config", "format", "graph", "workflow_role", "upload"), _FR),
    ("PlatformSpecs", "flush_payload", ("endpoint", "store", "work_dir", "token"), _FR),
    ("PlatformSpecs", "send_feedback", ("endpoint", "rows", "token"), _FR),
    ("PlatformSpecs", "fetch_transform_input", ("uri", "directory"), _FR),
    ("PlatformSpecs", "store_transform_output", ("path", "uri"), _FR),
    ("PlatformSpecs", "run_transform_job", ("name", "model_dir", "settings", "work_dir", "input", "content_type",
                                            "split_type", "directory"), _FR),
    ("PlatformSpecs", "delete_payload", ("endpoint", "work_dir"), _FR),
    ("DatasetSpecs", "dataset_locate", ("settings", "download"), _FR),
    ("DatasetSpecs", "dataset_load", ("location", "settings"), _FR),
    ("GovernanceSpecs", "governance_settings_class", (), _FR),
    ("GovernanceSpecs", "governance_backend", ("settings",), _FR),
    ("MonitoringSpecs", "monitoring_settings_class", (), _FR),
    ("MonitoringSpecs", "monitoring_backend", ("settings",), _FR),
    ("CommandSpecs", "add_commands", ("subparsers", "use_case", "print_json"), _ALL),
    ("CommandSpecs", "dashboard_panels", ("use_case",), _ALL),
]


def _declared_specs() -> dict[tuple[str, str], Any]:
    found = {}
    for cls in hookspecs.ALL_SPECS:
        class_name = cls.__name__
        for name, member in vars(cls).items():
            if hasattr(member, "modelcycle_spec"):
                found[(class_name, name)] = member
    return found


def test_spec_classes_are_frozen() -> None:
    assert sorted(cls.__name__ for cls in hookspecs.ALL_SPECS) == sorted(
        ["FrameworkSpecs", "ServingSpecs", "FactsSpecs", "LifecycleSpecs", "PlatformSpecs",
         "DatasetSpecs", "GovernanceSpecs", "MonitoringSpecs", "CommandSpecs"]
    )


def test_no_hook_was_added_or_removed() -> None:
    assert sorted(_declared_specs()) == sorted((cls, hook) for cls, hook, _, _ in FROZEN_SPECS)


@pytest.mark.parametrize(
    ("spec_class", "hook", "arguments", "opts"), FROZEN_SPECS, ids=[f"{c}.{h}" for c, h, _, _ in FROZEN_SPECS]
)
def test_hook_spec_is_frozen(spec_class: str, hook: str, arguments: tuple[str, ...], opts: dict[str, Any]) -> None:
    function = getattr(getattr(hookspecs, spec_class), hook)
    parameters = list(inspect.signature(function).parameters.values())
    assert parameters[0].name == "self"
    assert tuple(p.name for p in parameters[1:]) == arguments
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is inspect.Parameter.empty
               for p in parameters)
    assert function.modelcycle_spec == opts
    # and the registry registers it as such
    caller = getattr(PluginRegistry().pm.hook, hook)
    assert caller.spec is not None
    assert tuple(caller.spec.argnames) == arguments
    assert caller.spec.opts == opts


def test_required_hooks_are_declared_specs() -> None:
    declared = {hook for _, hook in _declared_specs()}
    assert REQUIRED_FRAMEWORK_HOOKS <= declared
    for hooks in registry.REQUIRED_PLATFORM_HOOKS.values():
        assert hooks <= declared
