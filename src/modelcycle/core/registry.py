"""The plugin registry: loads only the plugins a use case selects, through entry points.

Built-in plugins take the same path as third-party ones: they are declared in our own
``pyproject.toml`` under the entry-point groups ``modelcycle.frameworks`` and
``modelcycle.platforms``. Loading checks the plugin's shape (every required hook present,
misspelled hooks refused) so a broken plugin fails at load, not in the middle of a run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from modelcycle.core import defaults, hookspecs
from modelcycle.core.errors import PluginContractError, PluginNotFoundError
from modelcycle.core.markers import PROJECT

__all__ = [
    "FRAMEWORK_GROUP",
    "PLATFORM_GROUP",
    "REQUIRED_FRAMEWORK_HOOKS",
    "REQUIRED_PLATFORM_HOOKS",
    "InstalledPlugin",
    "PluginRegistry",
    "installed_plugins",
]

log = logging.getLogger(__name__)

FRAMEWORK_GROUP = "modelcycle.frameworks"
PLATFORM_GROUP = "modelcycle.platforms"

REQUIRED_FRAMEWORK_HOOKS = frozenset(
    {"build_model", "train_step", "fit", "evaluate", "save_model", "model_fn", "predict_fn"}
)
REQUIRED_PLATFORM_HOOKS = {
    "training": frozenset({"run_training_job"}),
    "serving": frozenset(
        {"deploy_endpoint", "invoke_endpoint", "describe_endpoint", "delete_endpoint"}
    ),
}
_EXTRAS = {"pytorch": "pytorch", "lightning": "lightning", "keras": "keras", "sagemaker": "sagemaker"}


@dataclass(frozen=True)
class InstalledPlugin:
    """One entry point of a modelcycle group, as listed by ``modelcycle plugins``."""

    group: str
    name: str
    value: str
    distribution: str
    version: str

    @property
    def kind(self) -> str:
        return self.group.rsplit(".", 1)[-1].rstrip("s")


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def installed_plugins() -> list[InstalledPlugin]:
    """List every installed framework and platform plugin without importing any of them."""
    found = []
    for group in (FRAMEWORK_GROUP, PLATFORM_GROUP):
        for name, ep in sorted(_entry_points(group).items()):
            dist = ep.dist
            found.append(
                InstalledPlugin(
                    group=group,
                    name=name,
                    value=ep.value,
                    distribution=dist.metadata["Name"] if dist else "?",
                    version=dist.version if dist else "?",
                )
            )
    return found


class PluginRegistry:
    """A pluggy manager holding the core defaults plus the plugins loaded on demand.

    Attributes:
        pm: the underlying :class:`pluggy.PluginManager` (project name ``modelcycle``).
        framework: name of the loaded framework plugin, or ``None``.
    """

    def __init__(self, blocked: tuple[str, ...] = ()) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        for specs in (
            hookspecs.FrameworkSpecs,
            hookspecs.ServingSpecs,
            hookspecs.FactsSpecs,
            hookspecs.LifecycleSpecs,
            hookspecs.PlatformSpecs,
        ):
            self.pm.add_hookspecs(specs)
        for name in blocked:
            self.pm.set_blocked(name)
        self.pm.register(defaults, name="modelcycle.defaults")
        self.framework: str | None = None
        self._platforms: dict[str, Any] = {}
        self._platform_callers: dict[tuple[str, str], Any] = {}
        if os.environ.get("MODELCYCLE_DEBUG"):
            self.pm.trace.root.setwriter(log.debug)
            self.pm.enable_tracing()

    @property
    def hook(self) -> Any:
        """The hook relay: ``registry.hook.on_epoch_end(...)`` broadcasts to every plugin."""
        return self.pm.hook

    # -- loading -------------------------------------------------------------------------
    def _load(self, group: str, name: str) -> Any:
        available = _entry_points(group)
        kind = group.rsplit(".", 1)[-1].rstrip("s")
        if name not in available:
            installed = ", ".join(sorted(available)) or "none"
            raise PluginNotFoundError(
                f"{kind} '{name}' is not installed; installed {kind}s: {installed}. "
                f"Pick one of those, or pip install the package that provides '{name}'."
            )
        if self.pm.is_blocked(name):
            raise PluginNotFoundError(
                f"{kind} '{name}' is disabled (it is listed in disable_plugins); remove it from "
                f"disable_plugins or pick another {kind}"
            )
        existing = self.pm.get_plugin(name)
        if existing is not None:
            return existing
        try:
            plugin = available[name].load()
        except ImportError as exc:
            extra = _EXTRAS.get(name)
            fix = (
                f"pip install 'modelcycle[{extra}]'"
                if extra
                else f"install the dependencies of the package providing '{name}'"
            )
            raise PluginNotFoundError(
                f"{kind} '{name}' could not be imported ({exc}). Install what it needs: {fix}."
            ) from exc
        try:
            self.pm.register(plugin, name=name)  # validates hookimpl arguments against the specs
            self.pm.check_pending()  # refuses hookimpls matching no spec (misspelled hooks)
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginContractError(f"{kind} '{name}' is invalid: {exc}") from exc
        return plugin

    def _implemented(self, plugin: Any) -> set[str]:
        return {caller.name for caller in (self.pm.get_hookcallers(plugin) or [])}

    def load_framework(self, name: str) -> Any:
        """Load framework ``name`` and check it implements every required hook.

        Raises:
            PluginNotFoundError: no such entry point (the message lists the installed ones), or
                its import failed (the message names the extra to install).
            PluginContractError: hooks are missing (all named) or misspelled.
        """
        if self.framework not in (None, name):
            raise PluginContractError(
                f"framework '{self.framework}' is already loaded; one registry serves one "
                f"framework, so '{name}' needs a registry of its own"
            )
        plugin = self._load(FRAMEWORK_GROUP, name)
        missing = REQUIRED_FRAMEWORK_HOOKS - self._implemented(plugin)
        if missing:
            self.pm.unregister(plugin)
            raise PluginContractError(
                f"framework '{name}' is missing required hooks: {', '.join(sorted(missing))}. "
                "Implement them with @modelcycle.hookimpl (see modelcycle.core.hookspecs)."
            )
        self.framework = name
        return plugin

    def load_platform(self, name: str, role: str) -> Any:
        """Load platform ``name`` for ``role`` (``training`` or ``serving``) and check its hooks."""
        plugin = self._load(PLATFORM_GROUP, name)
        missing = REQUIRED_PLATFORM_HOOKS[role] - self._implemented(plugin)
        if missing:
            raise PluginContractError(
                f"platform '{name}' cannot serve as the {role} platform: missing hooks "
                f"{', '.join(sorted(missing))}"
            )
        self._platforms[name] = plugin
        self._platform_callers.clear()
        return plugin

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register an extra in-process plugin (observers, overrides) and validate it."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginContractError(str(exc)) from exc

    # -- calling -------------------------------------------------------------------------
    def call_first(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a firstresult hook; an unanswered hook raises instead of returning ``None``."""
        result = getattr(self.pm.hook, hook_name)(**kwargs)
        if result is None:
            raise PluginContractError(
                f"no plugin answered '{hook_name}' for framework '{self.framework}': the "
                "framework plugin must implement it (or return a value from it)"
            )
        return result

    def call_platform(self, platform: str, hook_name: str, **kwargs: Any) -> Any:
        """Call ``hook_name`` on platform ``platform`` only (other platforms are left out)."""
        if platform not in self._platforms:
            raise PluginContractError(f"platform '{platform}' is not loaded")
        key = (platform, hook_name)
        caller = self._platform_callers.get(key)
        if caller is None:
            others = [p for n, p in self._platforms.items() if n != platform]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            self._platform_callers[key] = caller
        result = caller(**kwargs)
        if result is None:
            raise PluginContractError(f"platform '{platform}' did not answer '{hook_name}'")
        return result
