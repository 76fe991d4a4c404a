"""The plugin registry: loads only the plugins a use case selects, through entry points.

Every extension point is an entry-point group, and built-in plugins take the same path as
third-party ones: they are declared in our own ``pyproject.toml`` under

- ``modelcycle.frameworks`` (``pytorch``, ``lightning``, ``keras``),
- ``modelcycle.platforms`` (``local``, ``sagemaker``),
- ``modelcycle.datasets`` (``mnist``, ``fashion-mnist``, ``cifar10``),
- ``modelcycle.governance`` (``local``, ``ibm``),
- ``modelcycle.monitoring`` (``local``, ``openscale``).

Loading checks the plugin's shape (every required hook present, misspelled hooks refused with
the spec they were probably meant to be) so a broken plugin fails at load, not in the middle of
a run.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
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
    "DATASET_GROUP",
    "GOVERNANCE_GROUP",
    "MONITORING_GROUP",
    "GROUPS",
    "REQUIRED_FRAMEWORK_HOOKS",
    "REQUIRED_PLATFORM_HOOKS",
    "REQUIRED_HOOKS",
    "InstalledPlugin",
    "PluginRegistry",
    "installed_plugins",
    "plugin_distribution",
]

log = logging.getLogger(__name__)

FRAMEWORK_GROUP = "modelcycle.frameworks"
PLATFORM_GROUP = "modelcycle.platforms"
DATASET_GROUP = "modelcycle.datasets"
GOVERNANCE_GROUP = "modelcycle.governance"
MONITORING_GROUP = "modelcycle.monitoring"
#: plugin kind -> entry-point group, in the order ``modelcycle plugins`` lists them.
GROUPS: dict[str, str] = {
    "framework": FRAMEWORK_GROUP,
    "platform": PLATFORM_GROUP,
    "dataset": DATASET_GROUP,
    "governance": GOVERNANCE_GROUP,
    "monitoring": MONITORING_GROUP,
}
#: kinds whose plugins may add CLI subcommands (their modules are imported by ``--help``).
COMMAND_KINDS = ("platform", "governance", "monitoring")

REQUIRED_FRAMEWORK_HOOKS = frozenset(
    {"build_model", "train_step", "fit", "evaluate", "save_model", "model_fn", "predict_fn"}
)
REQUIRED_PLATFORM_HOOKS = {
    "training": frozenset({"run_training_job"}),
    "serving": frozenset(
        {"deploy_endpoint", "invoke_endpoint", "describe_endpoint", "delete_endpoint"}
    ),
}
#: kind -> hooks a plugin of that kind must implement (platforms: per role, see above).
REQUIRED_HOOKS: dict[str, frozenset[str]] = {
    "framework": REQUIRED_FRAMEWORK_HOOKS,
    "dataset": frozenset({"dataset_locate", "dataset_load"}),
    "governance": frozenset({"governance_backend"}),
    "monitoring": frozenset({"monitoring_backend"}),
}
_HOOK_NAMES = frozenset(
    name for specs in hookspecs.ALL_SPECS for name in vars(specs) if not name.startswith("_")
)


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
        return next((kind for kind, group in GROUPS.items() if group == self.group), self.group.rsplit(".", 1)[-1])


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _describe(group: str, ep: EntryPoint) -> InstalledPlugin:
    dist = ep.dist
    return InstalledPlugin(
        group=group,
        name=ep.name,
        value=ep.value,
        distribution=dist.metadata["Name"] if dist else "?",
        version=dist.version if dist else "?",
    )


def installed_plugins(kinds: tuple[str, ...] | None = None) -> list[InstalledPlugin]:
    """List the installed plugins of every group (or of ``kinds``) without importing any."""
    found = []
    for kind, group in GROUPS.items():
        if kinds is None or kind in kinds:
            found += [_describe(group, ep) for _, ep in sorted(_entry_points(group).items())]
    return found


def plugin_distribution(kind: str, name: str) -> InstalledPlugin | None:
    """The installed plugin ``name`` of ``kind`` (its distribution and version), or ``None``."""
    ep = _entry_points(GROUPS[kind]).get(name)
    return _describe(GROUPS[kind], ep) if ep is not None else None


def _install_hint(ep: EntryPoint, name: str) -> str:
    """How to install what plugin ``name`` needs: its distribution's extra of the same name
    when there is one (``pip install 'modelcycle[keras]'``), else the distribution itself."""
    dist = ep.dist
    if dist is None:
        return f"install the dependencies of the package providing '{name}'"
    dist_name = dist.metadata["Name"]
    metadata = dist.metadata
    extras = (metadata.get_all("Provides-Extra") if hasattr(metadata, "get_all") else metadata.get("Provides-Extra")) or []
    if name in extras:
        return f"pip install '{dist_name}[{name}]'"
    return f"install the dependencies of the package providing '{name}' (pip install '{dist_name}')"


def _did_you_mean(error: str) -> str:
    """Add "did you mean `build_model`?" to pluggy's unknown-hook message."""
    hints = []
    for unknown in dict.fromkeys(re.findall(r"unknown hook '([A-Za-z_0-9]+)'", error)):
        close = difflib.get_close_matches(unknown, sorted(_HOOK_NAMES), n=1, cutoff=0.6)
        if close:
            hints.append(f"'{unknown}': did you mean `{close[0]}`?")
    return error + ("; " + "; ".join(hints) if hints else "")


class PluginRegistry:
    """A pluggy manager holding the core defaults plus the plugins loaded on demand.

    Frameworks and platforms are registered under their entry-point name (``pytorch``,
    ``local``); datasets, governance and monitoring backends under ``kind:name``
    (``governance:ibm``), since names may repeat across groups.

    Attributes:
        pm: the underlying :class:`pluggy.PluginManager` (project name ``modelcycle``).
        framework: name of the loaded framework plugin, or ``None``.
    """

    def __init__(self, blocked: tuple[str, ...] = ()) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        for specs in hookspecs.ALL_SPECS:
            self.pm.add_hookspecs(specs)
        for name in blocked:
            self.pm.set_blocked(name)
        self.pm.register(defaults, name="modelcycle.defaults")
        self.framework: str | None = None
        self._loaded: dict[str, dict[str, Any]] = {kind: {} for kind in GROUPS}
        self._callers: dict[tuple[str, str, str], Any] = {}
        if os.environ.get("MODELCYCLE_DEBUG"):
            self.pm.trace.root.setwriter(log.debug)
            self.pm.enable_tracing()

    @property
    def hook(self) -> Any:
        """The hook relay: ``registry.hook.on_epoch_end(...)`` broadcasts to every plugin."""
        return self.pm.hook

    @staticmethod
    def _key(kind: str, name: str) -> str:
        return name if kind in ("framework", "platform") else f"{kind}:{name}"

    # -- loading -------------------------------------------------------------------------
    def _load(self, group: str, name: str) -> Any:
        kind = next(k for k, g in GROUPS.items() if g == group)
        available = _entry_points(group)
        if name not in available:
            import difflib

            installed = ", ".join(sorted(available)) or "none"
            close = difflib.get_close_matches(name, sorted(available), n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            raise PluginNotFoundError(
                f"{kind} '{name}' is not installed; {guess}installed {kind}s: {installed}. "
                f"Pick one of those, or pip install the package that provides '{name}'."
            )
        key = self._key(kind, name)
        if self.pm.is_blocked(key) or self.pm.is_blocked(name):
            raise PluginNotFoundError(
                f"{kind} '{name}' is disabled (it is listed in disable_plugins); remove it from "
                f"disable_plugins or pick another {kind}"
            )
        existing = self.pm.get_plugin(key)
        if existing is not None:
            return existing
        try:
            plugin = available[name].load()
        except ImportError as exc:
            raise PluginNotFoundError(
                f"{kind} '{name}' could not be imported ({exc}). Install what it needs: "
                f"{_install_hint(available[name], name)}."
            ) from exc
        try:
            self.pm.register(plugin, name=key)  # validates hookimpl arguments against the specs
            self.pm.check_pending()  # refuses hookimpls matching no spec (misspelled hooks)
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginContractError(f"{kind} '{name}' is invalid: {_did_you_mean(str(exc))}") from exc
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
        self._loaded["framework"][name] = plugin
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
        self._remember("platform", name, plugin)
        return plugin

    def load_plugin(self, kind: str, name: str) -> Any:
        """Load the ``dataset``, ``governance`` or ``monitoring`` plugin ``name`` and check that
        it implements the hooks its kind requires (:data:`REQUIRED_HOOKS`)."""
        if kind in ("framework", "platform"):
            raise ValueError(f"use load_framework / load_platform for {kind}s")
        plugin = self._load(GROUPS[kind], name)
        missing = REQUIRED_HOOKS[kind] - self._implemented(plugin)
        if missing:
            self.pm.unregister(plugin)
            raise PluginContractError(
                f"{kind} '{name}' is missing required hooks: {', '.join(sorted(missing))}. "
                "Implement them with @modelcycle.hookimpl (see modelcycle.core.hookspecs)."
            )
        self._remember(kind, name, plugin)
        return plugin

    def _remember(self, kind: str, name: str, plugin: Any) -> None:
        if self._loaded[kind].get(name) is not plugin:
            self._loaded[kind][name] = plugin
            self._callers.clear()

    def load_command_plugins(self) -> list[str]:
        """Register every installed plugin of :data:`COMMAND_KINDS` (for their ``add_commands``)
        without role checks; a plugin that fails to import is skipped with a warning on stderr
        so one broken package cannot take the whole CLI down. Returns the names registered."""
        loaded = []
        for kind in COMMAND_KINDS:
            for name in sorted(_entry_points(GROUPS[kind])):
                try:
                    plugin = self._load(GROUPS[kind], name)
                except (PluginNotFoundError, PluginContractError) as exc:
                    print(f"warning: {exc}", file=sys.stderr)
                else:
                    self._remember(kind, name, plugin)  # so call_plugin still lets one answer
                    loaded.append(self._key(kind, name))
        return loaded

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register an extra in-process plugin (observers, overrides) and validate it."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginContractError(_did_you_mean(str(exc))) from exc

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

    def _caller(self, kind: str, name: str, hook_name: str) -> Any:
        key = (kind, name, hook_name)
        caller = self._callers.get(key)
        if caller is None:
            others = [p for loaded_kind, plugins in self._loaded.items() if loaded_kind == kind
                      for n, p in plugins.items() if n != name]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            self._callers[key] = caller
        return caller

    def call_plugin(self, kind: str, name: str, hook_name: str, *, required: bool = True, **kwargs: Any) -> Any:
        """Call ``hook_name`` with the loaded ``kind`` plugin ``name`` answering, and no other
        plugin of that kind (two governance backends never both answer). With ``required`` an
        unanswered hook raises :class:`PluginContractError`; otherwise it returns ``None``."""
        if name not in self._loaded[kind]:
            raise PluginContractError(f"{kind} '{name}' is not loaded")
        result = self._caller(kind, name, hook_name)(**kwargs)
        if result is None and required:
            raise PluginContractError(f"{kind} '{name}' did not answer '{hook_name}'")
        return result

    def call_platform(self, platform: str, hook_name: str, **kwargs: Any) -> Any:
        """Call ``hook_name`` on platform ``platform`` only (other platforms are left out)."""
        if platform not in self._loaded["platform"]:
            raise PluginContractError(f"platform '{platform}' is not loaded")
        result = self._caller("platform", platform, hook_name)(**kwargs)
        if result is None:
            raise PluginContractError(f"platform '{platform}' did not answer '{hook_name}'")
        return result
