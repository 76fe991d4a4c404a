"""The governance backend of a use case: the plugin ``governance.backend`` names (entry-point
group ``modelcycle.governance``), loaded with its settings validated.

Settings: every key of the ``governance:`` section besides ``backend`` and ``database_url``
belongs to the selected backend. A key may be written flat (``governance.catalog_id``) or under
the backend's name (``governance.ibm.catalog_id``); both forms may be mixed, but one key must not
be given two different values. A mapping under the name of *another* installed governance
backend is that backend's and is left alone until it is selected. The backend's
``governance_settings_class`` validates the settings (it should forbid unknown keys); a backend
without one takes no settings, so any such key is a :class:`~modelcycle.core.errors.ConfigError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelcycle.core.config import CONFIG_FILE, validate_section
from modelcycle.core.errors import ConfigError, PluginContractError
from modelcycle.core.plugin_types import GovernanceBackend
from modelcycle.core.registry import installed_plugins

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.view import UseCaseView

__all__ = ["KIND", "load_backend", "backend_settings", "written_settings"]

#: The plugin kind (registry) of governance backends.
KIND = "governance"
_CORE_KEYS = ("backend", "database_url")
_BACKEND_ATTRIBUTES = ("name", "publish", "push_facts", "remove")


def written_settings(use_case: UseCaseView) -> tuple[dict[str, Any], dict[str, Any]]:
    """The selected backend's settings as written: ``(flat keys, keys under governance.<name>)``.

    Raises:
        ConfigError: ``governance.<name>`` is not a mapping, or a key is given both ways with
            different values.
    """
    config = use_case.config.governance
    name = config.backend
    keys = config.backend_keys()
    section = keys.pop(name, None)
    source = str(use_case.directory / CONFIG_FILE)
    if section is None:
        section = {}
    elif not isinstance(section, dict):
        raise ConfigError(
            f"invalid configuration in {source}:\n  governance.{name}: must be a mapping of the "
            f"'{name}' backend's settings (got {section!r})"
        )
    others = {plugin.name for plugin in installed_plugins((KIND,))} - {name}
    flat = {key: value for key, value in keys.items() if not (key in others and isinstance(value, dict))}
    clashes = sorted(key for key in set(flat) & set(section) if flat[key] != section[key])
    if clashes:
        raise ConfigError(
            f"invalid configuration in {source}:\n"
            + "\n".join(f"  governance.{key} and governance.{name}.{key}: two different values; keep one"
                        for key in clashes)
        )
    return flat, section


def backend_settings(use_case: UseCaseView, settings_class: type | None) -> Any:
    """Validate the selected backend's settings with ``settings_class`` (``None``: the backend
    takes none). Returns the settings object, or ``None`` without a settings class.

    Raises:
        ConfigError: a key is unknown or a value invalid; the message names ``governance.<key>``
            (``governance.<backend>.<key>`` when written only that way) and the allowed keys.
    """
    name = use_case.config.governance.backend
    flat, section = written_settings(use_case)
    source = str(use_case.directory / CONFIG_FILE)
    if settings_class is None:
        unknown = [f"governance.{key}" for key in flat] + [f"governance.{name}.{key}" for key in section]
        if unknown:
            raise ConfigError(
                f"invalid configuration in {source}:\n"
                + "\n".join(f"  {path}: unknown key; allowed keys: {', '.join(_CORE_KEYS)} "
                            f"(the governance backend '{name}' takes no settings)" for path in unknown)
            )
        return None
    prefix = f"governance.{name}" if section and not flat else "governance"
    return validate_section(settings_class, {**flat, **section}, prefix, source)


def load_backend(use_case: UseCaseView) -> GovernanceBackend:
    """Load the backend ``governance.backend`` names, validate its settings and return the
    backend object its ``governance_backend`` hook builds from them.

    Raises:
        PluginNotFoundError: no such backend is installed (the message lists the installed
            ones), or its module cannot be imported (the message names what to install).
        PluginContractError: the plugin misses ``governance_backend``, or returns an object
            without ``name``, ``publish``, ``push_facts`` and ``remove``.
        ConfigError: its settings are invalid (see :func:`backend_settings`).
    """
    name = use_case.config.governance.backend
    registry = use_case.registry
    registry.load_plugin(KIND, name)
    settings_class = registry.call_plugin(KIND, name, "governance_settings_class", required=False)
    settings = backend_settings(use_case, settings_class)
    backend = registry.call_plugin(KIND, name, "governance_backend", settings=settings)
    if not isinstance(backend, GovernanceBackend):
        missing = [attribute for attribute in _BACKEND_ATTRIBUTES if not hasattr(backend, attribute)]
        raise PluginContractError(
            f"governance '{name}': governance_backend returned a {type(backend).__name__} without "
            f"{', '.join(missing)}; return an object with every member of "
            "modelcycle.core.plugin_types.GovernanceBackend"
        )
    return backend
