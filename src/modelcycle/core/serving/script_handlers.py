"""The user's SageMaker inference handlers (``inference.py``) of a script-mode model.

A script-mode model directory (see :class:`~modelcycle.core.artifacts.ScriptMode`) holds the
user's source dir under ``code/``; ``manifest.script.serving_entry_point`` names the handler file
in it. Its semantics are the SageMaker inference toolkit's:

* ``model_fn(model_dir)`` loads the model, once per process; required unless the framework has
  a default (Keras: the SavedModel; PyTorch: a TorchScript ``model.pt``);
* ``input_fn(body, content_type)`` → the model's input, ``predict_fn(data, model)`` → the
  prediction, ``output_fn(prediction, accept)`` → the response body (or ``(body, content_type)``);
  each optional, the framework's default (else the toolkit's JSON/CSV/NPY one) standing in;
* or ``transform_fn(model, body, content_type, accept)`` doing all three, exclusive with them.

Framework defaults come from the artifact's framework plugin through the
``script_handler_defaults`` hook; this module imports no framework.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from modelcycle.core.errors import ArtifactError
from modelcycle.core.serving import script_codecs

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.artifacts import Manifest
    from modelcycle.core.registry import PluginRegistry
    from modelcycle.core.serving.context import ServingContext

__all__ = ["HANDLERS", "CODE_DIR", "ScriptHandlers", "check_handlers", "handler_file", "load_handlers",
           "framework_defaults"]

#: Every handler name the toolkit looks for in the user's file.
HANDLERS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
#: Where the user's source dir sits in a script-mode model directory.
CODE_DIR = "code"
_STEPS = ("input_fn", "predict_fn", "output_fn")


def handler_file(model_dir: Path, manifest: Manifest) -> Path | None:
    """The user's handler file of a script-mode model, or ``None`` (built-in model, or a script
    model served by its framework's default handlers)."""
    script = manifest.script
    if script is None or not script.serving_entry_point:
        return None
    return Path(model_dir) / CODE_DIR / script.serving_entry_point


def _defined_names(path: Path) -> set[str]:
    """Handler names defined at the top level of ``path`` (``def``, assignment or import).

    Raises:
        ArtifactError: the file is missing or has a syntax error (``file:line``).
    """
    if not path.is_file():
        raise ArtifactError(
            f"{path}: the serving entry point is missing from the model's {CODE_DIR}/ directory; put "
            "inference.py in training.source_dir (or fix serving.entry_point) and retrain"
        )
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ArtifactError(
            f"{path}:{exc.lineno}: syntax error in the inference handlers: {exc.msg}; fix the file in "
            "training.source_dir and retrain"
        ) from None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names & set(HANDLERS)


def _check_combination(path: Path, names: set[str]) -> None:
    mixed = sorted(names & set(_STEPS))
    if "transform_fn" in names and mixed:
        raise ArtifactError(
            f"{path}: defines transform_fn together with {', '.join(mixed)}; SageMaker uses either "
            "transform_fn or input_fn/predict_fn/output_fn: remove one side"
        )


def framework_defaults(registry: PluginRegistry, model_dir: Path, context: ServingContext) -> dict[str, Callable[..., Any]]:
    """The handlers the artifact's framework plugin provides (``script_handler_defaults``),
    the toolkit's ``input_fn``/``output_fn`` filling the rest; loads the framework first."""
    from modelcycle.core.providers import load_artifact_framework

    if registry.framework is None:
        load_artifact_framework(registry, context.manifest)
    defaults: dict[str, Callable[..., Any]] = {
        "input_fn": script_codecs.decode,
        "output_fn": script_codecs.encode,
    }
    answered = registry.pm.hook.script_handler_defaults(model_dir=Path(model_dir), context=context)
    defaults.update(answered or {})
    return defaults


def check_handlers(model_dir: Path, registry: PluginRegistry | None = None) -> None:
    """Refuse a script-mode model whose handlers cannot serve, before any endpoint starts.

    Checks the handler file parses, does not mix ``transform_fn`` with the three steps, and
    defines ``model_fn`` and ``predict_fn`` unless the framework has defaults for them (only then
    is the framework loaded). A built-in model passes unchecked.

    Raises:
        ArtifactError: naming the file (and line, for a syntax error) and the fix.
    """
    from modelcycle.core.artifacts import read_manifest

    manifest = read_manifest(Path(model_dir))
    if manifest.script is None:
        return
    path = handler_file(model_dir, manifest)
    names = _defined_names(path) if path is not None else set()
    if path is not None:
        _check_combination(path, names)
    needed = {"model_fn"} | ({"predict_fn"} if "transform_fn" not in names else set())
    missing = sorted(needed - names)
    if not missing:
        return
    from modelcycle.core.registry import PluginRegistry
    from modelcycle.core.serving.context import ServingContext

    context = ServingContext(manifest=manifest, model_dir=Path(model_dir))
    defaults = framework_defaults(registry or PluginRegistry(), Path(model_dir), context)
    lacking = [name for name in missing if name not in defaults]
    if lacking:
        where = str(path) if path is not None else f"{model_dir} (no serving.entry_point)"
        raise ArtifactError(
            f"{where}: defines no {' and no '.join(lacking)}, and framework '{manifest.framework}' has no "
            f"default for this model: define {', '.join(lacking)} in the inference handlers "
            "(SageMaker's contract) and retrain"
        )


def _import(path: Path) -> ModuleType:
    """Import the handler file under a name no other module has, with ``code/`` on ``sys.path``
    so the user's helper modules import as they do in SageMaker's container."""
    code_dir = str(path.parent.resolve())
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    name = "modelcycle_user_handlers_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ArtifactError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@dataclass(frozen=True)
class ScriptHandlers:
    """The handlers one endpoint serves with, each the user's or a default (SageMaker signatures).

    ``transform_fn`` is set only when the user defined it; ``input_fn``/``predict_fn``/``output_fn``
    are then unused. ``user`` names the handlers that came from the user's file.
    """

    model_fn: Callable[[str], Any]
    input_fn: Callable[[Any, str], Any]
    predict_fn: Callable[[Any, Any], Any] | None
    output_fn: Callable[[Any, str], Any]
    transform_fn: Callable[[Any, Any, str, str], Any] | None
    user: frozenset[str]
    source: Path | None


def load_handlers(model_dir: Path, context: ServingContext, registry: PluginRegistry) -> ScriptHandlers:
    """Check and import the user's handler file and complete it with the framework's defaults.

    Raises:
        ArtifactError: as :func:`check_handlers`.
    """
    check_handlers(model_dir, registry)
    path = handler_file(model_dir, context.manifest)
    module = _import(path) if path is not None else None
    user = {name: getattr(module, name) for name in HANDLERS if callable(getattr(module, name, None))}
    defaults = framework_defaults(registry, Path(model_dir), context)
    chosen = {**defaults, **user}
    return ScriptHandlers(
        model_fn=chosen["model_fn"], input_fn=chosen["input_fn"], predict_fn=chosen.get("predict_fn"),
        output_fn=chosen["output_fn"], transform_fn=user.get("transform_fn"), user=frozenset(user), source=path,
    )
