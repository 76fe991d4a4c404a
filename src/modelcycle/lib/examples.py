"""The example use cases modelcycle ships as package data, for built-in plugins' ``framework_info``.

``src/modelcycle/examples/<example>-<framework>/modelcycle.yaml`` is example ``<example>`` of
framework ``<framework>`` (``mnist-pytorch`` is ``mnist`` for ``pytorch``).
"""

from __future__ import annotations

from importlib.resources import files

__all__ = ["packaged_examples"]


def packaged_examples(framework: str) -> dict[str, str]:
    """``{example name: modelcycle.yaml text}`` of the examples shipped for ``framework``."""
    root = files("modelcycle") / "examples"
    suffix = f"-{framework}"
    found: dict[str, str] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        config = entry / "modelcycle.yaml"
        if entry.name.endswith(suffix) and config.is_file():
            found[entry.name[: -len(suffix)]] = config.read_text()
    return found
