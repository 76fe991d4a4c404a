"""What provides a use case's plugins, and what an artifact or a container must install.

The core knows no framework by name: it asks the selected framework plugin's ``framework_info``
hook (:class:`~modelcycle.core.plugin_types.FrameworkInfo`) and, for a plugin without that hook,
derives the distribution from the plugin's entry point. From that it writes the manifest's
``providers``, the model archive's ``code/requirements.txt`` and the requirements of a
framework container, and it names the distribution to install when an artifact's framework is
missing.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from modelcycle.core.artifacts import Manifest, Provider, modelcycle_version
from modelcycle.core.errors import PluginContractError, PluginNotFoundError
from modelcycle.core.plugin_types import FrameworkInfo
from modelcycle.core.registry import installed_plugins, plugin_distribution

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.registry import PluginRegistry

__all__ = [
    "MODELCYCLE",
    "framework_info",
    "installed_framework_info",
    "framework_provider",
    "plugin_provider",
    "artifact_providers",
    "archive_requirements",
    "container_requirements",
    "load_artifact_framework",
]

#: modelcycle's own distribution name.
MODELCYCLE = "modelcycle"


def _canonical(distribution: str) -> str:
    """PEP 503 name normalisation (``Modelcycle_Example.Adapter`` → ``modelcycle-example-adapter``)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def framework_info(registry: PluginRegistry, name: str) -> FrameworkInfo:
    """What the loaded framework ``name`` says about itself.

    Its ``framework_info`` hook's answer; for a plugin without that hook, a FrameworkInfo
    naming the distribution its entry point belongs to (no extras, libraries, requirements or
    examples).

    Raises:
        PluginContractError: the hook answered something else than a FrameworkInfo.
    """
    answer = registry.pm.hook.framework_info()
    if answer is None:
        installed = plugin_distribution("framework", name)
        return FrameworkInfo(distribution=installed.distribution if installed else name)
    if not isinstance(answer, FrameworkInfo):
        raise PluginContractError(
            f"framework '{name}' answered framework_info with {type(answer).__name__}; return a "
            "modelcycle.core.plugin_types.FrameworkInfo"
        )
    return answer


def installed_framework_info(name: str, blocked: tuple[str, ...] = ()) -> FrameworkInfo:
    """Load framework ``name`` in a registry of its own and return :func:`framework_info`.

    Raises:
        PluginNotFoundError: no such framework (the message lists the installed ones), or it is
            in ``blocked`` or cannot be imported.
        PluginContractError: the plugin misses required hooks or answers framework_info wrongly.
    """
    from modelcycle.core.registry import PluginRegistry

    registry = PluginRegistry(blocked=blocked)
    registry.load_framework(name)
    return framework_info(registry, name)


def _installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def framework_provider(registry: PluginRegistry, name: str, info: FrameworkInfo | None = None) -> Provider:
    """The distribution, version and extras providing the loaded framework ``name`` (``info``:
    its :func:`framework_info`, asked for when not given)."""
    info = info or framework_info(registry, name)
    installed = plugin_distribution("framework", name)
    if installed is not None and _canonical(installed.distribution) == _canonical(info.distribution):
        release = installed.version
    else:
        release = _installed_version(info.distribution)
    return Provider(name=name, distribution=info.distribution, version=release, extras=tuple(info.extras))


def plugin_provider(kind: str, name: str) -> Provider | None:
    """The distribution and version providing the installed ``kind`` plugin ``name`` (from its
    entry point, without importing it), or ``None`` when no such entry point is installed."""
    installed = plugin_distribution(kind, name)
    if installed is None:
        return None
    return Provider(name=name, distribution=installed.distribution, version=installed.version)


def artifact_providers(registry: PluginRegistry, framework: str, dataset: str) -> tuple[FrameworkInfo, dict[str, Provider]]:
    """The loaded ``framework``'s info and the providers a model artifact records: ``framework``,
    plus ``dataset`` when that data set comes from an installed plugin."""
    info = framework_info(registry, framework)
    providers = {"framework": framework_provider(registry, framework, info)}
    dataset_provider = plugin_provider("dataset", dataset)
    if dataset_provider is not None:
        providers["dataset"] = dataset_provider
    return info, providers


def archive_requirements(framework: Provider, modelcycle: str | None = None) -> list[str]:
    """The model archive's ``code/requirements.txt`` lines: modelcycle pinned (with the
    framework's extras when modelcycle itself provides it: ``modelcycle[pytorch]==0.1.0``) and
    the framework's own distribution pinned when it is another (``modelcycle-example-adapter==0.1.0``).
    Installing these (and their dependencies) is enough to load and serve the archive."""
    release = modelcycle or modelcycle_version()
    if _canonical(framework.distribution) == MODELCYCLE:
        return [Provider(name=framework.name, distribution=MODELCYCLE, version=release, extras=framework.extras).requirement]
    return [f"{MODELCYCLE}=={release}", framework.requirement]


def container_requirements(
    info: FrameworkInfo,
    framework: Provider | None = None,
    modelcycle: str | None = None,
    training: bool = True,
    override: list[str] | None = None,
) -> list[str]:
    """``requirements.txt`` lines for a prebuilt framework container (SageMaker's PyTorch or
    TensorFlow images, which bring torch/TensorFlow themselves): modelcycle pinned without an
    extra (an extra would pin another torch), the framework's distribution pinned when it is
    not modelcycle, then ``info.requirements`` (plus ``info.training_requirements`` for a
    training container). ``override`` (``training.requirements``) replaces them all.

    Args:
        info: the framework's description.
        framework: its provider (pinned version); default: the installed one.
        modelcycle: the modelcycle version to pin; default: the installed one.
        training: for a training container (else serving).
        override: the user's own lines.
    """
    if override is not None:
        return list(override)
    lines = [f"{MODELCYCLE}=={modelcycle or modelcycle_version()}"]
    if _canonical(info.distribution) != MODELCYCLE:
        release = framework.version if framework is not None else _installed_version(info.distribution)
        lines.append(f"{info.distribution}=={release}")
    lines += info.requirements
    if training:
        lines += info.training_requirements
    return list(dict.fromkeys(lines))


def load_artifact_framework(registry: PluginRegistry, manifest: Manifest) -> None:
    """Load the framework plugin that made the artifact ``manifest`` describes into ``registry``.

    Raises:
        PluginNotFoundError: the framework is not installed; the message names the distribution
            and version to ``pip install`` (from the manifest's providers) and the installed
            frameworks. Other load errors pass through unchanged.
    """
    try:
        registry.load_framework(manifest.framework)
    except PluginNotFoundError as exc:
        provider = manifest.providers.get("framework")
        if provider is None or plugin_distribution("framework", manifest.framework) is not None:
            raise
        installed = ", ".join(p.name for p in installed_plugins(("framework",))) or "none"
        raise PluginNotFoundError(
            f"this model was made by framework '{manifest.framework}' from {provider.distribution} "
            f"{provider.version}, which is not installed here (installed frameworks: {installed}): "
            f"pip install '{provider.requirement}', or the archive's code/requirements.txt"
        ) from exc
