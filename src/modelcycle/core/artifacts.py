"""Model artifacts: a model directory, its ``modelcycle.json`` manifest and ``model.tar.gz``.

The layout is SageMaker's: the archive's root holds the framework's model files and the
manifest, and ``code/`` holds the inference entry point plus ``requirements.txt``. The manifest
names the framework plugin that loads the artifact, the versions it was made with, the input
schema, the preprocessing applied on the serving side, the data lineage, and the distributions
that provide its framework and dataset plugins (``providers``), so an archive says what to
install wherever it goes.

Integrity: ``files`` in the manifest maps every file of the model directory (weights, ``code/``,
everything but the manifest itself and ``__pycache__``) to its SHA-256, and
``model.tar.gz.sha256`` beside the archive holds the archive's own SHA-256 (``sha256sum``
format). :func:`verify_model` checks both before a model is deployed, served or described, and
refuses a mismatch with an :class:`ArtifactError` naming the file. Manifests written before
``format_version`` 2 record no hashes: they are served with a warning that says so (retrain to
get a verifiable model); an archive without a sidecar is verified member by member against the
manifest it holds.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
import tarfile
import zlib
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelcycle.core.errors import ArtifactError
from modelcycle.core.textfiles import decode_utf8, read_utf8

__all__ = [
    "MANIFEST_NAME",
    "ARCHIVE_NAME",
    "FieldSchema",
    "InputSchema",
    "Preprocessing",
    "DatasetLineage",
    "ScriptMode",
    "Provider",
    "Manifest",
    "write_manifest",
    "read_manifest",
    "package_model",
    "package_directory",
    "extract_archive",
    "modelcycle_version",
    "hash_files",
    "verify_files",
    "verify_archive",
    "verify_model",
]

MANIFEST_NAME = "modelcycle.json"
ARCHIVE_NAME = "model.tar.gz"

_INFERENCE_ENTRY_POINT = '''"""SageMaker inference entry point written by modelcycle.

It delegates the four handlers to the framework plugin named in modelcycle.json, so the
container runs exactly the code the local endpoint runs.
"""
from modelcycle.core.serving.pipeline import sagemaker_handlers

model_fn, input_fn, predict_fn, output_fn = sagemaker_handlers()
'''


#: Where a TensorFlow Serving SavedModel sits in a model directory (SageMaker's TensorFlow container serves it).
TFS_SAVED_MODEL = "model/1/saved_model.pb"


def modelcycle_version() -> str:
    """The installed modelcycle distribution's version (``0+unknown`` when not installed)."""
    try:
        return version("modelcycle")
    except PackageNotFoundError:
        return "0+unknown"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSchema(_Frozen):
    """One named field of a tabular record (a :class:`~modelcycle.core.dataset_types.Feature`)."""

    name: str
    kind: Literal["numerical", "categorical"] = "numerical"
    categories: tuple[str, ...] = ()


class InputSchema(_Frozen):
    """One record as clients send it.

    ``kind: image``: raw pixels of ``shape`` ``(C, H, W)`` in ``value_range``.
    ``kind: tabular``: ``shape`` ``(F,)`` values of the named ``fields`` (in the model's column
    order; a categorical field's value is one of its ``categories``, carried internally as the
    category's index).
    """

    kind: Literal["image", "tabular"] = "image"
    shape: tuple[int, ...]
    dtype: str = "uint8"
    value_range: tuple[float, float] = (0.0, 255.0)
    fields: tuple[FieldSchema, ...] = ()

    @property
    def field_names(self) -> list[str]:
        return [field.name for field in self.fields]


class Preprocessing(_Frozen):
    """The training-time transformation of raw records into the model's float32 input.

    Images: ``(raw / scale - mean[c]) / std[c]`` per channel. Tabular (``categories`` set, one
    entry per raw column): a numerical column (``categories[i] == 0``) becomes
    ``(raw - mean[i]) / std[i]``; a categorical one with ``k`` categories becomes ``k`` one-hot
    columns (its raw value is the category index); the output keeps the raw column order.
    """

    scale: float = 255.0
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categories: tuple[int, ...] = ()

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Normalise raw ``(N, C, H, W)`` pixels, or encode raw ``(N, F)`` tabular records, into
        the model's float32 input (tabular: ``(N, input_width)``)."""
        if raw.ndim == 2:
            return self._encode(raw)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1) * self.scale
        return ((raw - mean * self.scale) / std).astype(np.float32, copy=False)

    @property
    def input_width(self) -> int:
        """Tabular: the width of one encoded record (numerical columns + one-hot columns)."""
        return sum(max(k, 1) for k in self.categories)

    def _encode(self, raw: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        scaled = ((raw - mean) / std).astype(np.float32, copy=False)
        if not any(self.categories):
            return scaled
        out = np.zeros((raw.shape[0], self.input_width), dtype=np.float32)
        column = 0
        rows = np.arange(raw.shape[0])
        for i, k in enumerate(self.categories):
            if k == 0:
                out[:, column] = scaled[:, i]
                column += 1
            else:
                out[rows, column + raw[:, i].astype(np.int64)] = 1.0
                column += k
        return out


class DatasetLineage(_Frozen):
    name: str
    checksums: dict[str, str]
    train_records: int
    test_records: int


class Provider(_Frozen):
    """The installed distribution that provides a plugin.

    Attributes:
        name: the plugin's entry-point name (``sklearn-mlp``, ``mnist``).
        distribution: the distribution's name (``modelcycle-example-adapter``).
        version: its version when the artifact was made.
        extras: extras of the distribution the plugin needs (``("lightning",)``).
    """

    name: str
    distribution: str
    version: str
    extras: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The pinned pip requirement: ``modelcycle[lightning]==0.1.0``."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{self.distribution}{extras}=={self.version}"


class ScriptMode(_Frozen):
    """A model trained by the user's own SageMaker script (``training.entry_point``).

    The model directory is then SageMaker's: whatever the script wrote to ``SM_MODEL_DIR`` at the
    top level, and the source dir (``inference.py``, ``requirements.txt``...) under ``code/``.
    ``serving_entry_point`` (relative to ``code/``) holds the handlers the endpoint loads
    (``model_fn``, optional ``input_fn``/``predict_fn``/``output_fn`` or ``transform_fn``);
    ``None`` means the framework's default handlers."""

    training_entry_point: str
    serving_entry_point: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Frozen):
    """The ``modelcycle.json`` that travels with every model artifact.

    ``providers`` maps a plugin kind (``framework``, ``dataset``) to the :class:`Provider` that
    made the artifact; manifests written before it existed have none. ``files`` maps every file
    of the model directory but the manifest (POSIX paths relative to it) to its SHA-256;
    manifests before ``format_version`` 2 have none.
    """

    format_version: int = 2
    use_case: str
    framework: str
    framework_version: str = Field(description="version of the framework plugin's distribution")
    modelcycle_version: str
    libraries: dict[str, str] = Field(default_factory=dict)
    run_id: str
    created_at: str
    model_files: list[str]
    input_schema: InputSchema
    preprocessing: Preprocessing
    classes: list[str]
    dataset: DatasetLineage
    metrics: dict[str, float] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    providers: dict[str, Provider] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> SHA-256 of every model file")
    user_code: dict[str, str] = Field(default_factory=dict, description="the model.class code copied into code/user/")
    script: ScriptMode | None = Field(default=None, description="set when the user's own training script trained the model")

    @property
    def model_input_shape(self) -> tuple[int, ...]:
        """The network's input: ``(C, H, W)`` images, or ``(W,)`` for tabular records (``W``
        the encoded width of :attr:`preprocessing`)."""
        if self.input_schema.kind == "tabular":
            return (self.preprocessing.input_width,)
        return tuple(self.input_schema.shape)

    @staticmethod
    def now() -> str:
        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    @staticmethod
    def runtime_libraries(*names: str) -> dict[str, str]:
        """Versions of the named installed distributions plus the Python version."""
        found = {"python": platform.python_version()}
        for name in names:
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                continue
        return found


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    """Write ``modelcycle.json`` into ``model_dir`` atomically."""
    path = Path(model_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    os.replace(tmp, path)
    return path


def read_manifest(model_dir: Path, expected_framework: str | None = None) -> Manifest:
    """Read and validate the manifest of ``model_dir``.

    Raises:
        ArtifactError: no manifest, an invalid one, or one made by another framework plugin
            than ``expected_framework``.
    """
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{model_dir} is not a modelcycle model: {MANIFEST_NAME} is missing. Train the use "
            "case (modelcycle train) or point at the directory that holds the manifest."
        )
    fix = f"the manifest is damaged; retrain (modelcycle train --force) or restore {MANIFEST_NAME} from {ARCHIVE_NAME}"
    try:
        manifest = Manifest.model_validate_json(read_utf8(path, ArtifactError, fix))
    except ValidationError as exc:
        raise ArtifactError(f"{path} is not a valid manifest ({fix}): {exc}") from None
    if expected_framework is not None and manifest.framework != expected_framework:
        raise ArtifactError(
            f"model in {model_dir} was made by framework plugin '{manifest.framework}', not "
            f"'{expected_framework}': load it with '{manifest.framework}'"
        )
    return manifest


def package_model(model_dir: Path, requirements: list[str]) -> Path:
    """Add ``code/`` to ``model_dir`` and write ``model.tar.gz`` beside it (SageMaker layout).

    ``code/inference.py`` holds the handlers of the container that serves the artifact:
    TensorFlow Serving's ``input_handler``/``output_handler``
    (:data:`modelcycle.core.serving.tfs.ENTRY_POINT`) when the model directory holds a TF Serving
    SavedModel (``model/1/saved_model.pb``, as the keras plugin writes), else the inference
    toolkit's four handlers (PyTorch's container).

    Returns:
        The archive's path (``model_dir.parent / "model.tar.gz"``).
    """
    model_dir = Path(model_dir)
    code = model_dir / "code"
    code.mkdir(exist_ok=True)
    entry_point = _INFERENCE_ENTRY_POINT
    if (model_dir / TFS_SAVED_MODEL).is_file():
        from modelcycle.core.serving.tfs import ENTRY_POINT as entry_point
    (code / "inference.py").write_text(entry_point)
    (code / "requirements.txt").write_text("\n".join(requirements) + "\n")
    manifest = read_manifest(model_dir)
    write_manifest(model_dir, manifest.model_copy(update={"files": hash_files(model_dir)}))
    archive = model_dir.parent / ARCHIVE_NAME
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model_dir).as_posix())
    os.replace(tmp, archive)
    _write_sidecar(archive)
    return archive


def package_directory(directory: Path, archive: Path) -> Path:
    """``tar czf archive -C directory .`` as SageMaker packs ``/opt/ml/model``: members are
    relative to ``directory`` (files and sub-directories, no links followed). Returns ``archive``."""
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_dir() or path.is_file():
                tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    os.replace(tmp, archive)
    return archive


def extract_archive(archive: Path, destination: Path) -> Path:
    """Extract a model archive safely into ``destination``.

    Raises:
        ArtifactError: a member is absolute, climbs out with ``..``, or is a link, device or
            other special file — nothing is extracted then.
    """
    destination = Path(destination)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts:
                    raise ArtifactError(
                        f"{archive} is unsafe: member '{member.name}' points outside the "
                        "extraction directory; refusing to extract it"
                    )
                if not (member.isfile() or member.isdir()):
                    raise ArtifactError(
                        f"{archive} is unsafe: member '{member.name}' is a link or special "
                        "file; model archives hold only files and directories"
                    )
            destination.mkdir(parents=True, exist_ok=True)
            tar.extractall(destination, members=members, filter="data")
    except tarfile.TarError as exc:
        raise ArtifactError(f"{archive} is not a readable tar.gz archive ({exc})") from exc
    return destination


# -- integrity ---------------------------------------------------------------------------------
_CHUNK = 1 << 20
_RETRAIN = "retrain (modelcycle train --force)"


def _sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_sidecar(archive: Path) -> Path:
    """Write ``<archive>.sha256`` (``sha256sum`` format) atomically beside ``archive``."""
    sidecar = _sidecar(archive)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{_digest(archive)}  {archive.name}\n")
    os.replace(tmp, sidecar)
    return sidecar


#: The archive's install list, which a SageMaker deploy rewrites for its container: not verified.
_CONTAINER_REQUIREMENTS = "code/requirements.txt"


def _hashed(path: PurePosixPath) -> bool:
    """Whether a file at ``path`` (relative to the model directory) is recorded in ``files``."""
    return path != PurePosixPath(MANIFEST_NAME) and "__pycache__" not in path.parts


def hash_files(model_dir: Path) -> dict[str, str]:
    """SHA-256 of every file under ``model_dir`` but the manifest and ``__pycache__``, by
    POSIX path relative to ``model_dir``, sorted."""
    model_dir = Path(model_dir)
    found = {}
    for path in sorted(model_dir.rglob("*")):
        relative = PurePosixPath(path.relative_to(model_dir).as_posix())
        if path.is_file() and _hashed(relative):
            found[str(relative)] = _digest(path)
    return found


def _warn_unhashed(model_dir: Path) -> None:
    print(
        f"warning: {Path(model_dir) / MANIFEST_NAME} records no file hashes (written before modelcycle "
        f"verified its artifacts): the model's files cannot be checked for corruption; {_RETRAIN} to "
        "get a verifiable model",
        file=sys.stderr,
    )


def verify_files(model_dir: Path, manifest: Manifest) -> None:
    """Check every file ``manifest.files`` records against its SHA-256 (files it does not record,
    such as a ``__pycache__`` made while serving, are ignored, and so is ``code/requirements.txt``,
    which deploying to SageMaker rewrites). A manifest without hashes (before
    ``format_version`` 2) passes with a warning on stderr.

    Raises:
        ArtifactError: a recorded file is missing or its content changed; names each one and the fix.
    """
    model_dir = Path(model_dir)
    if not manifest.files:
        _warn_unhashed(model_dir)
        return
    problems = []
    for name, expected in manifest.files.items():
        if name == _CONTAINER_REQUIREMENTS:
            continue  # rewritten for the serving container at deploy (what it installs, not code that runs)
        path = model_dir / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif _digest(path) != expected:
            problems.append(f"{path} does not match its SHA-256 recorded at training")
    if problems:
        archive = model_dir.parent / ARCHIVE_NAME
        restore = f"restore the file (e.g. from {archive} if it is intact)" if archive.is_file() else "restore the file"
        raise ArtifactError(
            f"model {model_dir} is corrupt or was changed after training: {'; '.join(problems)}. "
            f"Refusing to use it: {_RETRAIN} or {restore}"
        )


def verify_archive(archive: Path) -> None:
    """Check ``model.tar.gz``: against its ``.sha256`` sidecar when there is one, else by reading
    every member (a truncated or corrupt stream fails) and comparing the files its manifest
    records with their SHA-256.

    Raises:
        ArtifactError: the archive is truncated, corrupt or differs from what was packaged (names
            the archive and the fix), or the sidecar is unreadable.
    """
    archive = Path(archive)
    fix = f"{_RETRAIN} to package it again, or restore the file"
    sidecar = _sidecar(archive)
    if sidecar.is_file():
        recorded = read_utf8(sidecar, ArtifactError, f"the checksum file is damaged; {fix}").split()
        if not recorded or not re.fullmatch(r"[0-9a-f]{64}", recorded[0]):
            raise ArtifactError(f"{sidecar} holds no SHA-256: the checksum file is damaged; {fix}")
        if _digest(archive) != recorded[0]:
            raise ArtifactError(f"{archive} does not match its SHA-256 in {sidecar}: it is truncated or corrupt; {fix}")
        return
    digests: dict[str, str] = {}
    manifest_bytes = None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = str(PurePosixPath(member.name.removeprefix("./")))
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has a stream
                digest = hashlib.sha256()
                data = b""
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    if name == MANIFEST_NAME:
                        data += chunk
                digests[name] = digest.hexdigest()
                if name == MANIFEST_NAME:
                    manifest_bytes = data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArtifactError(f"{archive} is truncated or corrupt ({exc}); {fix}") from None
    if manifest_bytes is None:
        raise ArtifactError(f"{archive} holds no {MANIFEST_NAME}: it is not a modelcycle model archive; {fix}")
    where = Path(f"{archive}!{MANIFEST_NAME}")
    try:
        manifest = Manifest.model_validate_json(decode_utf8(manifest_bytes, where, ArtifactError, fix))
    except ValidationError as exc:
        raise ArtifactError(f"{where} is not a valid manifest ({fix}): {exc}") from None
    bad = [name for name, expected in manifest.files.items() if digests.get(name) != expected]
    if bad:
        raise ArtifactError(f"{archive} does not match the SHA-256 its manifest records for {', '.join(bad)}; {fix}")


def verify_model(model_dir: Path) -> Manifest:
    """Verify a model before it is deployed, served or described: the manifest, every file it
    records (:func:`verify_files`) and ``model.tar.gz`` beside the directory when there is one
    (:func:`verify_archive`). Returns the manifest.

    Raises:
        ArtifactError: naming the missing, changed or truncated file and the fix.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    verify_files(model_dir, manifest)
    archive = model_dir.parent / ARCHIVE_NAME
    if archive.is_file():
        verify_archive(archive)
    return manifest
