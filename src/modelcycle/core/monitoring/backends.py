"""The monitoring backend a use case mirrors into: a plugin of the ``modelcycle.monitoring``
entry-point group, named by ``monitoring.backend`` (``local``, ``openscale``, a third party's).

:func:`open_mirror` loads the plugin, validates its settings section (``monitoring.<name>:``)
with the plugin's own class, and calls its ``monitoring_backend`` hook once: the monitoring
service opens one mirror per command, so a backend that signs in does it once per command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelcycle.core.config import CONFIG_FILE, validate_section
from modelcycle.core.errors import ConfigError, PluginNotFoundError
from modelcycle.core.registry import installed_plugins

if TYPE_CHECKING:  # pragma: no cover - typing only
    from modelcycle.core.plugin_types import MonitoringBackend
    from modelcycle.core.view import UseCaseView

__all__ = ["Mirror", "open_mirror", "check_sections"]

KIND = "monitoring"


@dataclass(frozen=True)
class Mirror:
    """A loaded monitoring backend.

    Attributes:
        name: the plugin's entry-point name (``openscale``): the key under which the ``monitor``
            stage keeps the ids its ``subscribe`` returned, and results carry what it did.
        backend: the object its ``monitoring_backend`` hook returned.
    """

    name: str
    backend: MonitoringBackend

    @property
    def title(self) -> str:
        """How users know the backend (its ``name`` attribute, e.g. ``Watson OpenScale``)."""
        return str(getattr(self.backend, "name", None) or self.name)


def _source(use_case: UseCaseView) -> str:
    return str(use_case.directory / CONFIG_FILE)


def check_sections(use_case: UseCaseView) -> None:
    """Every settings section under ``monitoring:`` names an installed monitoring backend.

    Raises:
        ConfigError: naming the section and the allowed keys.
    """
    monitoring = use_case.config.monitoring
    installed = sorted(plugin.name for plugin in installed_plugins((KIND,)))
    unknown = sorted(set(monitoring.backend_sections()) - set(installed))
    if unknown:
        allowed = sorted(type(monitoring).model_fields) + installed
        raise ConfigError(
            f"invalid configuration in {_source(use_case)}:\n"
            + "\n".join(f"  monitoring.{key}: unknown key: no installed monitoring backend is named '{key}'; "
                        f"allowed keys: {', '.join(allowed)}" for key in unknown))


def _settings(use_case: UseCaseView, name: str) -> Any:
    """Backend ``name``'s settings validated by its ``monitoring_settings_class`` (``None`` when
    it has none). A backend other than the configured one, without a section (a subscription it
    made before the configuration moved on), gets its defaults unvalidated: enough for the ids
    it recorded to locate what it made."""
    registry = use_case.registry
    settings_class = registry.call_plugin(KIND, name, "monitoring_settings_class", required=False)
    sections = use_case.config.monitoring.backend_sections()
    if settings_class is None:
        if sections.get(name):
            raise ConfigError(f"invalid configuration in {_source(use_case)}:\n  monitoring.{name}: "
                              f"monitoring backend '{name}' takes no settings; remove the section")
        return None
    if name not in sections and name != use_case.config.monitoring.backend:
        return settings_class.model_construct()
    return validate_section(settings_class, sections.get(name, {}), f"{KIND}.{name}", _source(use_case))


def open_mirror(use_case: UseCaseView, name: str | None = None) -> Mirror:
    """Load monitoring backend ``name`` (default: ``monitoring.backend``) and return its backend
    object for this command.

    Raises:
        PluginNotFoundError: no such backend is installed (the message lists those that are).
        ConfigError: a settings section names no installed backend, or the backend's settings
            are invalid (errors name ``monitoring.<name>.<key>``).
        PluginContractError: the plugin misses ``monitoring_backend`` or answers ``None``.
    """
    name = name or use_case.config.monitoring.backend
    try:
        use_case.registry.load_plugin(KIND, name)
    except PluginNotFoundError as exc:
        raise PluginNotFoundError(f"monitoring.backend: {exc}") from None
    check_sections(use_case)
    settings = _settings(use_case, name)
    return Mirror(name, use_case.registry.call_plugin(KIND, name, "monitoring_backend", settings=settings))
