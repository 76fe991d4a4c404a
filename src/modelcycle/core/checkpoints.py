"""Per-epoch checkpoints of a training run: where they live, how one is committed atomically,
and the "last complete epoch" marker a resumed run starts from.

Layout, under the run's directory (``.modelcycle/runs/<run_id>/``)::

    checkpoint/
        last.json            the marker: {"epoch": 2, "directory": "epoch-0002", ...}
        epoch-0002/          the framework's files (save_checkpoint) + core.json

A checkpoint is written into a staging directory (``.epoch-0002.<pid>.tmp``): the framework
plugin's ``save_checkpoint`` hook writes its files (weights, optimizer, scheduler, its RNG
states), the core adds ``core.json`` (epoch, the reporter's history, Python's and NumPy's RNG
states); every file is fsynced, the directory renamed to ``epoch-NNNN``, and only then the marker
replaced (temp file + ``os.replace``). A process killed at any point leaves either the previous
complete checkpoint or the new one, never a half-written one; older epochs are removed after
the marker moved on.

A framework plugin's ``fit`` uses two calls of :class:`~modelcycle.core.training_types.TrainingContext`:
``context.start_epoch(model)`` before its loop (1, or the epoch after the last checkpoint, whose
state it restores through ``load_checkpoint``) and ``context.save_checkpoint(model, epoch)``
after each completed epoch. Both do nothing when the run has no checkpoint directory (tests,
benchmarks, container jobs, several processes) or the framework implements no checkpoint hooks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelcycle.core.errors import ArtifactError

__all__ = [
    "CHECKPOINT_DIR",
    "MARKER",
    "CORE_STATE",
    "CheckpointError",
    "Checkpoint",
    "CheckpointStore",
    "atomic_write_bytes",
    "atomic_write_json",
    "read_json",
    "supports_checkpoints",
    "resume",
    "save",
]

#: the checkpoint directory's name inside a run's directory
CHECKPOINT_DIR = "checkpoint"
#: the marker naming the last complete epoch
MARKER = "last.json"
#: the core's part of a checkpoint (epoch, history, Python and NumPy RNG states)
CORE_STATE = "core.json"


class CheckpointError(ArtifactError):
    """A checkpoint exists but cannot be read or restored (the message names the file)."""


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file beside it, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def atomic_write_json(path: Path, document: Any) -> None:
    """:func:`atomic_write_bytes` of ``document`` as indented JSON."""
    atomic_write_bytes(path, json.dumps(document, indent=2).encode())


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file modelcycle wrote; damage is a :class:`CheckpointError` naming it."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"{what} {path} is unreadable ({type(exc).__name__}: {exc}); run 'modelcycle train --restart' "
            "to start the run over"
        ) from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _rng_states() -> dict[str, Any]:
    import numpy as np

    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _restore_rng_states(states: dict[str, Any]) -> None:
    import numpy as np

    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: the epoch it ends, its directory and the core's saved state."""

    epoch: int
    directory: Path
    history: list[dict[str, float]]
    rng: dict[str, Any]


class CheckpointStore:
    """The ``checkpoint/`` directory of one run.

    Args:
        root: the checkpoint directory (``<run dir>/checkpoint``); created on first commit.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.marker = self.root / MARKER

    def latest(self) -> Checkpoint | None:
        """The last complete checkpoint, or ``None`` when none was committed.

        Raises:
            CheckpointError: the marker or the checkpoint it names is damaged.
        """
        if not self.marker.exists():
            return None
        marker = read_json(self.marker, "the checkpoint marker")
        try:
            epoch, directory = int(marker["epoch"]), self.root / str(marker["directory"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint marker {self.marker} lacks 'epoch' or 'directory' ({exc}); "
                                  "run 'modelcycle train --restart' to start the run over") from exc
        if directory.parent != self.root or not directory.is_dir():
            raise CheckpointError(f"the checkpoint marker {self.marker} names {directory}, which does not exist; "
                                  "run 'modelcycle train --restart' to start the run over")
        core = read_json(directory / CORE_STATE, "the checkpoint state")
        if core.get("epoch") != epoch:
            raise CheckpointError(f"{directory / CORE_STATE} is for epoch {core.get('epoch')}, the marker "
                                  f"{self.marker} says {epoch}; run 'modelcycle train --restart'")
        return Checkpoint(epoch=epoch, directory=directory, history=list(core.get("history", [])), rng=core["rng"])

    def commit(self, epoch: int, write: Callable[[Path], Iterable[str]], history: list[dict[str, float]]) -> Checkpoint:
        """Write the checkpoint of ``epoch``: ``write(staging_dir)`` writes the framework's files
        (returning their names), the core adds its state, then the directory and the marker are
        committed atomically and older checkpoints removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}"
        staging = self.root / f".{name}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        files = [str(f) for f in (write(staging) or [])]
        rng = _rng_states()
        (staging / CORE_STATE).write_text(json.dumps({"epoch": epoch, "history": history, "rng": rng}))
        for path in staging.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        _fsync_directory(staging)
        final = self.root / name
        if final.exists():  # left by a process killed between the rename and the marker
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_directory(self.root)
        atomic_write_json(self.marker, {"epoch": epoch, "directory": name, "files": files, "written_at": _now()})
        for old in self.root.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return Checkpoint(epoch=epoch, directory=final, history=list(history), rng=rng)

    def remove(self) -> None:
        """Delete every checkpoint of the run (once its model is packaged)."""
        shutil.rmtree(self.root, ignore_errors=True)


def supports_checkpoints(hook: Any) -> bool:
    """Whether the loaded plugins implement both ``save_checkpoint`` and ``load_checkpoint``."""
    return all(
        getattr(getattr(hook, name, None), "get_hookimpls", lambda: [])() for name in ("save_checkpoint", "load_checkpoint")
    )


def _active(context: Any) -> bool:
    return context.checkpoint_dir is not None and context.rank == 0 and context.world_size == 1


def resume(context: Any, model: Any) -> int:
    """The first epoch ``fit`` trains: the one after the run's last complete checkpoint, whose
    state is then restored (the framework's ``load_checkpoint``, Python's and NumPy's RNGs, the
    reporter's history); 1 without a checkpoint. See :meth:`TrainingContext.start_epoch`."""
    if not _active(context) or not supports_checkpoints(context.hook):
        return 1
    checkpoint = CheckpointStore(context.checkpoint_dir).latest()
    if checkpoint is None:
        return 1
    try:
        context.registry.call_first("load_checkpoint", model=model, directory=checkpoint.directory, context=context)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"cannot restore the checkpoint {checkpoint.directory} ({type(exc).__name__}: {exc}); run "
            "'modelcycle train --restart' to start the run over"
        ) from exc
    _restore_rng_states(checkpoint.rng)
    context.reporter.history[:] = checkpoint.history
    context.resumed_epoch = checkpoint.epoch
    context.reporter.log(
        f"Resuming run {context.run_id} after epoch {checkpoint.epoch} (checkpoint {checkpoint.directory})"
    )
    return checkpoint.epoch + 1


def save(context: Any, model: Any, epoch: int) -> None:
    """Commit the checkpoint of the completed ``epoch`` (see :meth:`TrainingContext.save_checkpoint`)."""
    if not _active(context) or not supports_checkpoints(context.hook):
        return

    def write(directory: Path) -> list[str]:
        return list(context.registry.call_first("save_checkpoint", model=model, directory=directory, context=context))

    CheckpointStore(context.checkpoint_dir).commit(epoch, write, list(context.reporter.history))
