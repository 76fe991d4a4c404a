"""Wheels of the running modelcycle and of plugin distributions, so that a training job's source
dir and a model archive's ``code/`` install without any package index having them.

:func:`distribution_wheel` makes one wheel per installed distribution, as it runs here:

- run from a source tree (an editable install, or a checkout on ``PYTHONPATH``): the tree's
  ``pyproject.toml`` and package are copied to a scratch directory (the tree stays clean) and
  built with ``pip wheel --no-deps --no-build-isolation``; the wheel is cached under
  ``<user cache>/modelcycle/wheels/<name>-<version>-<source hash>/`` and rebuilt only when
  the version or a source file changes;
- a regular install: the wheel is packed from the distribution's installed files (its
  ``RECORD``; no byte code), its ``*.dist-info`` metadata and ``WHEEL`` tag; nothing is built.

:func:`ship_wheels` copies them beside ``requirements.txt`` (top level of the source dir or
``code/``: tools that flatten a source dir keep them there) and :func:`wheel_requirements`
returns the ``requirements.txt`` lines that install them: each distribution pinned to its
shipped version without extras (an extra would pull torch or TensorFlow, which the framework
container brings), and ``--find-links .`` — a relative path pip resolves against the
requirements file's directory, whatever the working directory the container runs pip in.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

from modelcycle.core.errors import ConfigError

__all__ = ["FIND_LINKS", "ShippedWheel", "distribution_wheel", "ship_wheels", "wheel_cache_dir", "wheel_requirements"]

#: The ``requirements.txt`` line that finds the wheels shipped beside it.
FIND_LINKS = "--find-links ."
_SKIPPED_DIRS = {"__pycache__", ".git", "build", "dist", ".venv", ".mypy_cache", ".pytest_cache"}
_METADATA_SKIPPED = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


class ShippedWheel(NamedTuple):
    """One shipped wheel: its distribution, version and path."""

    distribution: str
    version: str
    path: Path


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def wheel_cache_dir() -> Path:
    """Where built wheels are cached: ``$MODELCYCLE_CACHE_DIR/wheels`` if set, else
    ``$XDG_CACHE_HOME/modelcycle/wheels`` (``~/.cache/modelcycle/wheels``)."""
    if root := os.environ.get("MODELCYCLE_CACHE_DIR"):
        return Path(root) / "wheels"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelcycle" / "wheels"


def _distribution(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"distribution '{name}' is not installed, so no wheel of it can be shipped: pip install it "
            "(or remove the plugin it provides from the use case)"
        ) from None


def _top_level_packages(dist: metadata.Distribution) -> list[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return [line.strip() for line in text.splitlines() if line.strip()]
    names = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
    return sorted(n.removesuffix(".py") for n in names if not n.endswith((".dist-info", ".pth", ".data")))


def _project_name(tree: Path) -> str | None:
    pyproject = tree / "pyproject.toml"
    if not pyproject.is_file():
        return None
    import tomllib

    try:
        return str(tomllib.loads(pyproject.read_text()).get("project", {}).get("name") or "") or None
    except (tomllib.TOMLDecodeError, OSError):
        return None


def _source_tree(dist: metadata.Distribution) -> tuple[Path, Path] | None:
    """``(tree, package dir)`` when ``dist`` runs from a source tree, else ``None``.

    The package imported here wins (a checkout on ``PYTHONPATH`` over the editable install it
    shadows): its directory outside the distribution's install location means a source tree,
    found as the nearest parent whose ``pyproject.toml`` names the distribution.
    """
    name = _canonical(dist.metadata["Name"])
    installed = Path(str(dist.locate_file(""))).resolve()
    for package in _top_level_packages(dist) or [name.replace("-", "_")]:
        spec = find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        package_dir = Path(spec.origin).resolve().parent
        if package_dir.is_relative_to(installed) and not _editable(dist) and not _in_tree_metadata(dist):
            return None
        for tree in package_dir.parents:
            if _canonical(_project_name(tree) or "") == name:
                return tree, package_dir
    return None


def _in_tree_metadata(dist: metadata.Distribution) -> bool:
    """Whether ``dist``'s metadata is the ``*.egg-info`` a build leaves in a source tree (found
    first when the tree's ``src`` is on ``PYTHONPATH``): the tree, not an install."""
    path = getattr(dist, "_path", None)
    return path is not None and Path(str(path)).suffix == ".egg-info"


def _editable(dist: metadata.Distribution) -> bool:
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except json.JSONDecodeError:
        return False
    return bool(direct.get("dir_info", {}).get("editable"))


def _source_files(tree: Path, package_dir: Path) -> list[Path]:
    """The files a wheel is built from: the build configuration, readme and licence at the
    top of ``tree`` and every file of the package (no byte code, caches or build output)."""
    top = [p for p in sorted(tree.iterdir()) if p.is_file() and (
        p.name in ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
        or p.name.upper().startswith(("README", "LICENSE", "LICENCE", "NOTICE")))]
    files = []
    for root, dirs, names in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info"))
        files += [Path(root) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    return top + files


def _source_hash(tree: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(tree).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _build_from_source(dist: metadata.Distribution, tree: Path, package_dir: Path, cache: Path) -> Path:
    name, version = dist.metadata["Name"], dist.version
    files = _source_files(tree, package_dir)
    slot = cache / f"{_wheel_name(name)}-{version}-{_source_hash(tree, files)}"
    built = sorted(slot.glob("*.whl")) if slot.is_dir() else []
    if built:
        return built[0]
    with tempfile.TemporaryDirectory(prefix="modelcycle-wheel-") as scratch:
        copy = Path(scratch) / "src"
        for path in files:
            target = copy / path.relative_to(tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        out = Path(scratch) / "out"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--quiet", "--wheel-dir", str(out), str(copy)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = sorted(out.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ConfigError(
                f"building a wheel of {name} {version} from {tree} failed ({' '.join(command[2:5])}): "
                f"{(done.stderr or done.stdout).strip()[-1500:]}. The build backend named in its "
                "pyproject.toml must be installed (pip install setuptools wheel)"
            )
        slot.mkdir(parents=True, exist_ok=True)
        partial = slot / (wheels[0].name + ".part")
        shutil.copyfile(wheels[0], partial)
        os.replace(partial, slot / wheels[0].name)  # atomic: a concurrent reader never sees half a wheel
    return slot / wheels[0].name


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _compressed_tag(tags: list[str]) -> str:
    """The file name's tag for a ``WHEEL`` file's ``Tag:`` lines: ``py2.py3-none-any`` for
    ``py2-none-any`` and ``py3-none-any`` (each part's values in order, dot-joined)."""
    parts: list[dict[str, None]] = [{}, {}, {}]
    for tag in tags:
        pieces = tag.split("-")
        if len(pieces) == 3:
            for values, piece in zip(parts, pieces):
                values[piece] = None
    if not all(parts):
        return "py3-none-any"
    return "-".join(".".join(values) for values in parts)


def _pack_installed(dist: metadata.Distribution, cache: Path) -> Path:
    """A wheel of a regular install, from the files its ``RECORD`` lists."""
    name, version = dist.metadata["Name"], dist.version
    info_dir = next((Path(str(f)).parts[0] for f in dist.files or () if str(f).endswith(".dist-info/METADATA")), None)
    if info_dir is None:
        raise ConfigError(f"{name} {version} has no RECORD of its installed files; reinstall it with pip")
    wheel_meta = dist.read_text("WHEEL") or ""
    tag = _compressed_tag([line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")])
    slot = cache / f"{_wheel_name(name)}-{version}-installed"
    path = slot / f"{_wheel_name(name)}-{version}-{tag}.whl"
    if path.is_file():
        return path
    slot.mkdir(parents=True, exist_ok=True)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    partial = path.with_name(path.name + ".part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for entry in sorted(dist.files or (), key=str):
            relative = Path(str(entry))
            if relative.parts[0] == ".." or "__pycache__" in relative.parts or relative.suffix in (".pyc", ".pyo"):
                continue  # scripts outside site-packages are regenerated from entry_points.txt
            if relative.parts[0] == info_dir and relative.name in _METADATA_SKIPPED:
                continue
            source = Path(str(dist.locate_file(entry)))
            if not source.is_file():
                continue
            data = source.read_bytes()
            wheel.writestr(relative.as_posix(), data)
            writer.writerow([relative.as_posix(), _record_hash(data), len(data)])
        if not wheel_meta:
            data = f"Wheel-Version: 1.0\nGenerator: modelcycle\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
            wheel.writestr(f"{info_dir}/WHEEL", data)
            writer.writerow([f"{info_dir}/WHEEL", _record_hash(data), len(data)])
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        wheel.writestr(f"{info_dir}/RECORD", record.getvalue())
    os.replace(partial, path)
    return path


def distribution_wheel(name: str, cache: Path | None = None) -> ShippedWheel:
    """A wheel of the installed distribution ``name`` as it runs here (see the module doc).

    Raises:
        ConfigError: ``name`` is not installed, or building its wheel failed (the message holds
            pip's error).
    """
    dist = _distribution(name)
    cache = Path(cache) if cache is not None else wheel_cache_dir()
    source = _source_tree(dist)
    path = _build_from_source(dist, *source, cache) if source else _pack_installed(dist, cache)
    return ShippedWheel(dist.metadata["Name"], dist.version, path)


def ship_wheels(distributions: Iterable[str], target: Path, cache: Path | None = None) -> list[ShippedWheel]:
    """Copy a wheel of each distribution (duplicates once, in order) into ``target``."""
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    shipped = []
    for name in dict.fromkeys(_canonical(n) for n in distributions):
        wheel = distribution_wheel(name, cache)
        shutil.copyfile(wheel.path, directory / wheel.path.name)
        shipped.append(ShippedWheel(wheel.distribution, wheel.version, directory / wheel.path.name))
    return shipped


def wheel_requirements(shipped: Iterable[ShippedWheel], lines: Iterable[str]) -> list[str]:
    """``requirements.txt`` lines installing the ``shipped`` wheels, then ``lines`` (what the
    image lacks besides) less any other pin of a shipped distribution or an extra of one."""
    shipped = list(shipped)
    names = {_canonical(w.distribution) for w in shipped}
    out = [f"{w.distribution}=={w.version}" for w in shipped]
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and _canonical(match.group(1)) in names:
            continue
        out.append(line)
    return list(dict.fromkeys(out + [FIND_LINKS]))
