"""The example use cases modelcycle ships as package data, for built-in plugins' ``framework_info``.

``src/modelcycle/examples/<example>-<framework>/modelcycle.yaml`` is example ``<example>`` of
framework ``<framework>`` (``mnist-pytorch`` is ``mnist`` for ``pytorch``); every other file of
that folder (sub-folders included, ``__pycache__`` and dot-files excluded) is one of the
example's files, which ``init`` writes beside ``modelcycle.yaml``.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["DEFAULT_EXAMPLE", "packaged_example_files", "packaged_examples"]


#: The example ``init`` writes without ``--example``: declared first when a framework ships it.
DEFAULT_EXAMPLE = "mnist"


def packaged_examples(framework: str) -> dict[str, str]:
    """``{example name: modelcycle.yaml text}`` of the examples shipped for ``framework``,
    :data:`DEFAULT_EXAMPLE` first, then by name."""
    root = files("modelcycle") / "examples"
    suffix = f"-{framework}"
    found: dict[str, str] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        config = entry / "modelcycle.yaml"
        if entry.name.endswith(suffix) and config.is_file():
            found[entry.name[: -len(suffix)]] = config.read_text()
    return dict(sorted(found.items(), key=lambda item: (item[0] != DEFAULT_EXAMPLE, item[0])))


def _files(entry: Traversable, prefix: str = "") -> dict[str, str | bytes]:
    found: dict[str, str | bytes] = {}
    for child in sorted(entry.iterdir(), key=lambda e: e.name):
        if child.name.startswith(".") or child.name == "__pycache__" or (not prefix and child.name == "modelcycle.yaml"):
            continue
        if child.is_dir():
            found.update(_files(child, f"{prefix}{child.name}/"))
        elif child.name.endswith((".py", ".txt", ".md", ".yaml", ".yml", ".json", ".csv")):
            found[prefix + child.name] = child.read_text()
        else:
            found[prefix + child.name] = child.read_bytes()
    return found


def packaged_example_files(framework: str) -> dict[str, dict[str, str | bytes]]:
    """``{example name: {relative path: content}}``: the files beside ``modelcycle.yaml`` of
    the examples shipped for ``framework`` (examples without any are left out)."""
    root = files("modelcycle") / "examples"
    suffix = f"-{framework}"
    found: dict[str, dict[str, str | bytes]] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(suffix) and (entry / "modelcycle.yaml").is_file():
            if extra := _files(entry):
                found[entry.name[: -len(suffix)]] = extra
    return found
