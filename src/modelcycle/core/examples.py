"""The ``modelcycle.yaml`` that ``modelcycle init DIR --framework X [--example E]`` writes.

Any installed framework has examples: the ones its ``framework_info().examples`` declares (the
built-ins ship ``mnist``), and always :data:`GENERIC`, a commented template listing the
framework's own ``model:`` options with their defaults and marking what to fill in.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import yaml

from modelcycle.core.errors import ConfigError

__all__ = ["GENERIC", "list_examples", "example_config", "example_files"]

#: The example every framework has: the generic template.
GENERIC = "generic"


def _info_and_options(framework: str) -> tuple[Any, type | None]:
    """The framework's FrameworkInfo and ``model:`` config class (``None`` without one).

    Raises:
        PluginNotFoundError: ``framework`` is not installed; the message lists the installed ones.
    """
    from modelcycle.core.providers import framework_info
    from modelcycle.core.registry import PluginRegistry

    registry = PluginRegistry()
    registry.load_framework(framework)
    return framework_info(registry, framework), registry.pm.hook.model_config_class()


def list_examples(framework: str) -> list[str]:
    """The example names ``framework`` offers: its declared ones (sorted), then :data:`GENERIC`.

    Raises:
        PluginNotFoundError: ``framework`` is not installed; the message lists the installed ones.
    """
    info, _ = _info_and_options(framework)
    return [*sorted(info.examples), *([GENERIC] if GENERIC not in info.examples else [])]


def example_config(framework: str, example: str | None = None, name: str = "use-case") -> str:
    """The ``modelcycle.yaml`` text of ``framework``'s ``example`` for a use case called ``name``.

    ``example`` ``None`` picks the framework's first declared example (in its declaration
    order), else :data:`GENERIC`.
    In a declared example, ``{name}`` becomes ``name`` (without it, the ``name:`` line is replaced).

    Raises:
        PluginNotFoundError: ``framework`` is not installed (the installed ones are listed).
        ConfigError: the framework has no example ``example`` (its examples are listed).
    """
    info, options = _info_and_options(framework)
    declared = dict(sorted(info.examples.items()))
    if example is None:
        example = next(iter(info.examples), GENERIC)
    if example in declared:
        return _named(declared[example], name)
    if example == GENERIC:
        return generic_config(framework, name, info.distribution, options)
    available = ", ".join([*declared, *([GENERIC] if GENERIC not in declared else [])])
    raise ConfigError(
        f"framework '{framework}' has no example '{example}'; its examples: {available} "
        f"('{GENERIC}' writes a commented template to fill in)"
    )


def example_files(framework: str, example: str | None = None) -> dict[str, str | bytes]:
    """The files ``framework``'s ``example`` writes beside ``modelcycle.yaml``
    (``{relative path: content}``; none for :data:`GENERIC` or an example without any).

    Raises:
        PluginNotFoundError: ``framework`` is not installed.
        ConfigError: a path is absolute or leaves the use case directory (the plugin's fault).
    """
    info, _ = _info_and_options(framework)
    if example is None:
        example = next(iter(info.examples), GENERIC)
    found = dict(getattr(info, "example_files", {}).get(example, {}))
    for relative in found:
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or relative == "modelcycle.yaml":
            raise ConfigError(
                f"framework '{framework}': example '{example}' declares the file '{relative}', which is not a "
                "relative path inside the use case directory (or is modelcycle.yaml itself)")
    return found


def _named(text: str, name: str) -> str:
    if "{name}" in text:
        return text.replace("{name}", name)
    return re.sub(r"^name: .*$", f"name: {name}", text, count=1, flags=re.MULTILINE)


def _yaml_value(value: Any) -> str:
    """``value`` as a one-line YAML scalar or flow collection."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _option_lines(options: type | None) -> list[str]:
    """The ``model:`` section's lines: every option of the framework's config class with its
    default (required ones commented out and marked TODO), each with its description."""
    from pydantic_core import to_jsonable_python

    fields = getattr(options, "model_fields", None)
    if not fields:
        return ["model: {}                 # the framework declares no model options"]
    lines = ["model:"]
    for key, info in fields.items():
        note = f"  # {info.description}" if info.description else ""
        if info.is_required():
            annotation = getattr(info.annotation, "__name__", str(info.annotation))
            lines.append(f"  # {key}: TODO ({annotation}, required){note}")
        else:
            default = to_jsonable_python(info.get_default(call_default_factory=True), fallback=str)
            lines.append(f"  {key}: {_yaml_value(default)}{note}")
    return lines


def generic_config(framework: str, name: str, distribution: str, options: type | None) -> str:
    """The generic commented template for ``framework`` (provided by ``distribution``): valid
    YAML that validates as is when the framework's options all have defaults."""
    from modelcycle.core.config import Hyperparameters
    from modelcycle.core.registry import installed_plugins

    datasets = ", ".join(p.name for p in installed_plugins(("dataset",))) or "mnist"
    hp = Hyperparameters()
    lines = [
        f"# modelcycle use case for framework '{framework}' ({distribution}).",
        "# Fill in what is marked TODO, check the model options, then:",
        "#   modelcycle -C <this directory> run --until deploy",
        f"name: {name}",
        "description: TODO what the model predicts, for whom",
        f"framework: {framework}",
        "capture: manual           # manual | autolog (the framework's MLflow autologging, if any)",
        "",
        f"# {framework}'s own options (its model config class; defaults shown)",
        *_option_lines(options),
        "",
        "data:",
        f"  dataset: mnist           # TODO the dataset plugin: {datasets} (modelcycle plugins)",
        "  # path: DIR              # where its files are; default: MODELCYCLE_DATA_DIR or the cache",
        "",
        "hyperparameters:          # shared by every framework; a plugin may ignore some",
        f"  epochs: {hp.epochs}",
        f"  batch_size: {hp.batch_size}",
        f"  learning_rate: {hp.learning_rate}",
        f"  seed: {hp.seed}",
        "",
        "training:",
        "  platform: local",
        "",
        "serving:",
        "  platform: local",
        "  host: 127.0.0.1",
        "  port: 0                  # 0: pick a free port",
        "",
    ]
    return "\n".join(lines)
