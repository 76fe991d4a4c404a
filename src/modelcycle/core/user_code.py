"""A user's own model code: ``model: {class: "nets.py:MyNet"}`` or ``"my_package.nets:MyNet"``.

Framework-free: the framework plugins decide what the loaded object must be (an ``nn.Module``,
a ``LightningModule``, a function returning a ``keras.Model``); this module finds, imports,
packages and re-imports the code.

- :func:`parse_code_ref` splits ``"file.py:Name"`` (a file relative to the use case directory,
  which must lie inside it) and ``"package.module:Name"`` (an installed module).
- :func:`load_user_code` imports the file under a module name derived from its path and
  content (``modelcycle_user_code.<stem>_<key>``): the same file with the same bytes gives the
  same module, edited bytes a new one, so a later run in the same process never sees a stale class and a user's ``nets``
  module is never shadowed. Only the one file is imported and copied: it must be
  self-contained (imports of installed packages are fine, sibling files are not).
- :func:`construct` calls the class or function with ``**options`` plus ``input_shape`` and
  ``num_classes`` when its signature accepts them.
- :func:`package_user_code` copies the source file into ``<model_dir>/code/user/`` (beside, never
  over, ``code/inference.py`` and ``code/requirements.txt``) and returns the manifest record;
  the manifest's ``files`` hashes cover the copy like every other model file.
- :func:`load_packaged_code` imports the class from the model directory's copy, checking its
  SHA-256: endpoints, SageMaker's ``model_fn`` and ``deploy --run OLD`` serve what was trained,
  whatever happened to the use case directory since.
- :func:`ship_user_code` copies the file into a training job's source dir at the same relative
  path, so ``class: nets.py:MyNet`` means the same file inside the job.

Every failure is a :class:`UserCodeError` naming the file and what to fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import keyword
import shutil
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from modelcycle.core.errors import ConfigError

__all__ = [
    "USER_CODE_DIR",
    "UserCodeError",
    "CodeRef",
    "UserCode",
    "parse_code_ref",
    "load_user_code",
    "construct",
    "package_user_code",
    "load_packaged_code",
    "ship_user_code",
]

#: Where user code lives in a model directory (relative POSIX path).
USER_CODE_DIR = "code/user"
_MODULE_PREFIX = "modelcycle_user_code"
#: Files a training job's source dir already holds: a user file may not take their place.
_RESERVED = {"train.py", "requirements.txt", "modelcycle.yaml"}


class UserCodeError(ConfigError):
    """The ``model.class`` code cannot be found, imported, constructed or used."""


@dataclass(frozen=True)
class CodeRef:
    """A parsed ``model.class``: exactly one of ``file`` (POSIX path relative to the use case
    directory) and ``module`` (an importable module name) is set; ``name`` is the attribute."""

    spec: str
    name: str
    file: str | None = None
    module: str | None = None


@dataclass(frozen=True)
class UserCode:
    """Loaded user code: the object ``ref.name`` names and the source file it came from."""

    ref: CodeRef
    source: Path
    obj: Any
    sha256: str

    @property
    def where(self) -> str:
        """``nets.py:MyNet (/abs/nets.py)`` for error messages."""
        return f"'{self.ref.spec}' ({self.source})"


def _hint(spec: str) -> str:
    return (f"model.class is '{spec}': write 'file.py:ClassName' (a file in the use case directory) or "
            "'package.module:ClassName' (an installed module)")


def parse_code_ref(spec: str) -> CodeRef:
    """Parse ``"nets.py:MyNet"`` / ``"models/nets.py:MyNet"`` / ``"my_package.nets:MyNet"``.

    Raises:
        UserCodeError: no single ``:``, an empty or non-identifier name, an absolute path or one
            leaving the use case directory, or a file that is not ``.py``.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise UserCodeError(_hint(str(spec)))
    target, name = (part.strip() for part in spec.split(":"))
    if not target or not name.isidentifier() or keyword.iskeyword(name):
        raise UserCodeError(_hint(spec))
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = PurePosixPath(target.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise UserCodeError(
                f"model.class '{spec}': the file must be inside the use case directory (a relative path "
                "without '..'), because it is copied with the model; move it there"
            )
        if path.suffix != ".py":
            raise UserCodeError(f"model.class '{spec}': '{target}' is not a Python file (.py)")
        if str(path) in _RESERVED:
            raise UserCodeError(
                f"model.class '{spec}': '{path}' is a name modelcycle uses for its own training entry point; "
                "rename the file (e.g. nets.py)"
            )
        return CodeRef(spec=spec, name=name, file=str(path))
    if not all(part.isidentifier() for part in target.split(".")):
        raise UserCodeError(_hint(spec))
    return CodeRef(spec=spec, name=name, module=target)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import_file(path: Path, digest: str, spec: str) -> Any:
    """Import ``path`` as ``modelcycle_user_code.<stem>_<key>``, ``key`` hashing the path and
    the content: reused for the same file with the same bytes, new for anything else."""
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    key = hashlib.sha256(f"{path}\0{digest}".encode()).hexdigest()[:16]
    name = f"{_MODULE_PREFIX}.{stem}_{key}"
    if name in sys.modules:
        return sys.modules[name]
    if _MODULE_PREFIX not in sys.modules:  # a namespace parent, so the dotted name is importable
        parent = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(_MODULE_PREFIX, None, is_package=True))
        parent.__path__ = []
        sys.modules[_MODULE_PREFIX] = parent
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses, typing and pickle look classes up here
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise UserCodeError(
            f"model.class '{spec}': {path} has a syntax error at line {exc.lineno}: {exc.msg}; fix the file"
        ) from None
    except ImportError as exc:
        del sys.modules[name]
        raise UserCodeError(
            f"model.class '{spec}': importing {path} failed: {exc}. Install the missing package; the model "
            "file must be self-contained (only this file travels with the model, sibling files do not)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any error running the user's module is theirs to fix
        del sys.modules[name]
        raise UserCodeError(
            f"model.class '{spec}': running {path} raised {type(exc).__name__}: {exc}\n{_user_frames(exc, path)}"
        ) from None
    return module


def _user_frames(exc: BaseException, path: Path) -> str:
    """The traceback lines of ``exc`` that are in the user's file (the part they can fix)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return "".join(traceback.format_list(frames)).rstrip()


def _attribute(module: Any, ref: CodeRef, source: Path) -> Any:
    if not hasattr(module, ref.name):
        found = sorted(n for n, v in vars(module).items() if not n.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
                       and getattr(v, "__module__", None) == module.__name__)
        listed = ", ".join(found) or "none"
        raise UserCodeError(
            f"model.class '{ref.spec}': {source} defines no '{ref.name}' (classes and functions it defines: {listed}); "
            "fix the name after ':'"
        )
    return getattr(module, ref.name)


def load_user_code(spec: str, base_dir: Path) -> UserCode:
    """Import the object ``spec`` names; a file is looked up relative to ``base_dir``.

    Raises:
        UserCodeError: a bad spec, a missing file or module, a syntax or import error (with the
            user's traceback lines), or a missing attribute.
    """
    ref = parse_code_ref(spec)
    if ref.file is not None:
        source = (Path(base_dir) / ref.file).resolve()
        if not source.is_file():
            raise UserCodeError(
                f"model.class '{spec}': {source} does not exist; put the file in the use case directory "
                f"{Path(base_dir).resolve()} or fix the path before ':'"
            )
        digest = _sha256(source)
        module = _import_file(source, digest, spec)
        return UserCode(ref=ref, source=source, obj=_attribute(module, ref, source), sha256=digest)
    assert ref.module is not None
    try:
        module = importlib.import_module(ref.module)
    except ImportError as exc:
        raise UserCodeError(
            f"model.class '{spec}': cannot import module '{ref.module}' ({exc}); install the package that "
            "provides it, or name a file ('nets.py:MyNet')"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise UserCodeError(f"model.class '{spec}': importing '{ref.module}' raised {type(exc).__name__}: {exc}") from None
    source_file = getattr(module, "__file__", None)
    if not source_file or not str(source_file).endswith(".py"):
        raise UserCodeError(
            f"model.class '{spec}': module '{ref.module}' has no Python source file to copy with the model; "
            "name a .py module"
        )
    source = Path(source_file).resolve()
    return UserCode(ref=ref, source=source, obj=_attribute(module, ref, source), sha256=_sha256(source))


def construct(code: UserCode, options: Mapping[str, Any], input_shape: Any, num_classes: int) -> Any:
    """Call the user's class or function with ``**options``, plus ``input_shape`` and
    ``num_classes`` when its signature accepts them (by name or ``**kwargs``) and ``options``
    does not set them already.

    Raises:
        UserCodeError: the object is not callable, or the call raised (its message and the
            traceback lines in the user's file are shown).
    """
    factory = code.obj
    if not callable(factory):
        raise UserCodeError(f"model.class {code.where} is a {type(factory).__name__}, not a class or function")
    kwargs = dict(options)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in (("input_shape", tuple(input_shape)), ("num_classes", int(num_classes))):
        if key not in kwargs and (key in parameters or takes_any):
            kwargs[key] = value
    try:
        return factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's constructor failed: show why
        frames = _user_frames(exc, code.source)
        raise UserCodeError(
            f"model.class {code.where}: calling it with {_shown(kwargs)} raised {type(exc).__name__}: {exc}"
            + (f"\n{frames}" if frames else "")
            + "\nFix model.options or the constructor"
        ) from None


def _shown(kwargs: Mapping[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")" if kwargs else "no arguments"


def package_user_code(code: UserCode, model_dir: Path) -> dict[str, str]:
    """Copy the source file into ``<model_dir>/code/user/`` and return the manifest record:
    ``class`` (the spec as configured), ``file`` (the copy, relative to ``model_dir``),
    ``sha256`` and, for an installed module, ``module``."""
    target_dir = Path(model_dir) / USER_CODE_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / code.source.name
    shutil.copyfile(code.source, target)
    record = {"class": code.ref.spec, "name": code.ref.name, "file": f"{USER_CODE_DIR}/{target.name}",
              "sha256": _sha256(target)}
    if code.ref.module is not None:
        record["module"] = code.ref.module
    return record


def load_packaged_code(model_dir: Path, record: Mapping[str, str]) -> Any:
    """The user's class or function, imported from the model directory's copy (never from the
    use case directory). A module copied from an installed package that only imports as part
    of that package (relative imports) is imported from the installed package instead, with a
    note on stderr.

    Raises:
        UserCodeError: the copy is missing or differs from its recorded SHA-256, or it fails to import.
    """
    path = (Path(model_dir) / record["file"]).resolve()
    spec = record.get("class", record["file"])
    if not path.is_file():
        raise UserCodeError(f"model {model_dir} records user code {record['file']} but the file is missing; retrain")
    digest = _sha256(path)
    if record.get("sha256") and digest != record["sha256"]:
        raise UserCodeError(f"{path} does not match the SHA-256 recorded at training; restore it or retrain")
    ref = CodeRef(spec=spec, name=record["name"], file=record["file"])
    try:
        module = _import_file(path, digest, spec)
    except UserCodeError:
        if not record.get("module"):
            raise
        print(f"note: {path} does not import on its own; using the installed module '{record['module']}'",
              file=sys.stderr)
        return load_user_code(f"{record['module']}:{record['name']}", Path(model_dir)).obj
    return _attribute(module, ref, path)


def ship_user_code(spec: str, base_dir: Path, target_dir: Path) -> Path | None:
    """Copy the file ``spec`` names into ``target_dir`` at the same relative path (a training
    job's source dir); ``None`` for an installed module (the job installs it). Returns the copy.

    Raises:
        UserCodeError: a bad spec or a missing file.
    """
    ref = parse_code_ref(spec)
    if ref.file is None:
        return None
    source = Path(base_dir) / ref.file
    if not source.is_file():
        raise UserCodeError(f"model.class '{spec}': {source.resolve()} does not exist; put the file in the use case directory")
    target = Path(target_dir) / ref.file
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
