"""The ``loader`` dataset plugin: the user's own function returns the arrays (IBM mlmonitor's
``fetch_data_function``).

``data: {dataset: loader, path: ., options: {function: "loader.py:fetch"}}``: ``function`` is
``FILE.py:NAME`` (a file relative to ``data.path``, which is relative to the use case directory;
without ``data.path``, relative to the current directory) or ``package.module:NAME`` (an
installed module). The function is called with ``options.arguments`` as keyword arguments and
returns ``(x_train, y_train, x_test, y_test)`` or a dict with those keys (+ optional
``classes``, and ``feature_names`` for 2-D feature vectors), converted and checked as
:mod:`modelcycle.datasets._arrays` states: images, or a tabular dataset when ``x_train`` is 2-D. Lineage: the
md5 of the loader's file, and of every ``options.files`` entry (paths relative to the loader's
directory, e.g. the raw files it reads; a change to any of them reloads the data).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

from pydantic import Field, field_validator

from modelcycle.core.datasets import Dataset, md5sum
from modelcycle.core.errors import ConfigError, DatasetIntegrityError, DatasetNotFoundError
from modelcycle.core.markers import hookimpl
from modelcycle.datasets._arrays import KEYS, Options, from_arrays, options

NAME = "loader"


class LoaderOptions(Options):
    """``data.options`` of the ``loader`` dataset."""

    function: str = Field(description='"loader.py:fetch" (a file) or "package.module:fetch" (installed)')
    arguments: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the function")
    files: list[str] = Field(default_factory=list, description="data files the function reads (for lineage)")

    @field_validator("function")
    @classmethod
    def _target(cls, value: str) -> str:
        module, sep, name = value.rpartition(":")
        if not sep or not module or not name.isidentifier():
            raise ValueError(f"'{value}' must be 'FILE.py:FUNCTION' or 'package.module:FUNCTION'")
        return value

    @property
    def is_file(self) -> bool:
        return self.function.rpartition(":")[0].endswith(".py")


def _base(settings: Any) -> Path:
    path = getattr(settings, "path", None)
    return Path(path).expanduser() if path is not None else Path.cwd()


@hookimpl
def dataset_locate(settings: Any, download: bool) -> Path:
    opts = options(LoaderOptions, settings, NAME)
    target = opts.function.rpartition(":")[0]
    if opts.is_file:
        base = _base(settings)
        if base.is_file():
            base = base.parent
        file = base / target
        if not file.is_file():
            raise DatasetNotFoundError(
                f"dataset 'loader': {file} does not exist (data.options.function '{opts.function}' is "
                f"relative to data.path{'' if getattr(settings, 'path', None) else ', unset, so to the current directory'}); "
                "set data.path to the directory holding it (relative to the use case directory, e.g. '.')")
        return file.resolve().parent
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):  # a missing parent package
        spec = None
    if spec is None or spec.origin is None:
        raise DatasetNotFoundError(
            f"dataset 'loader': module '{target}' of data.options.function is not installed; install it, or "
            "give a file instead ('loader.py:fetch')")
    return Path(spec.origin).resolve().parent


def _function(opts: LoaderOptions, location: Path) -> tuple[Callable[..., Any], Path]:
    target, _, name = opts.function.rpartition(":")
    if opts.is_file:
        file = location / Path(target).name
        module_name = f"_modelcycle_loader_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: report any failure with its file
            raise ConfigError(f"dataset 'loader': importing {file} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            sys.modules.pop(module_name, None)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ConfigError(f"dataset 'loader': importing module '{target}' failed: {type(exc).__name__}: {exc}") from exc
        file = Path(module.__file__ or target)
    function = getattr(module, name, None)
    if not callable(function):
        found = sorted(n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n]))
        raise ConfigError(
            f"dataset 'loader': {file} has no function '{name}'; its functions: {', '.join(found) or 'none'}")
    return function, file


def _arrays(result: Any, where: str) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    if isinstance(result, (tuple, list)) and len(result) == 4:
        return dict(zip(KEYS, result))
    raise DatasetIntegrityError(
        f"{where} returned {type(result).__name__}"
        f"{f' of length {len(result)}' if isinstance(result, (tuple, list)) else ''}; return "
        "(x_train, y_train, x_test, y_test) or a dict with those keys (+ optional 'classes', 'feature_names')")


@hookimpl
def dataset_load(location: Path, settings: Any) -> Dataset:
    opts = options(LoaderOptions, settings, NAME)
    function, file = _function(opts, location)
    where = f"{file.name}:{function.__name__}"
    checksums = {file.name: md5sum(file)} if file.parent == location else {}
    for declared in opts.files:
        path = location / declared
        if not path.is_file():
            raise DatasetNotFoundError(
                f"dataset 'loader': data.options.files names {declared}, but {path} does not exist")
        checksums[declared] = md5sum(path)
    try:
        result = function(**opts.arguments)
    except Exception as exc:
        raise DatasetIntegrityError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    return from_arrays(NAME, _arrays(result, where), location, checksums, where)
