"""Find the use cases (directories holding a ``modelcycle.yaml``) under the directories given."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CONFIG_NAME", "SKIPPED_DIRS", "find_use_cases"]

CONFIG_NAME = "modelcycle.yaml"
#: Directories never searched: environments, VCS data, modelcycle's own work dirs, JS packages.
SKIPPED_DIRS = frozenset({".venv", "venv", ".git", ".modelcycle", "node_modules", "__pycache__", ".tox"})


def find_use_cases(roots: Iterable[str | os.PathLike[str]], max_depth: int = 6) -> list[Path]:
    """Every directory at or below one of ``roots`` (at most ``max_depth`` levels down) that holds
    a ``modelcycle.yaml``, resolved, without duplicates, in path order. A use case's own
    subdirectories are searched too (a use case may hold others); :data:`SKIPPED_DIRS` and hidden
    directories are not.

    Raises:
        FileNotFoundError: a root does not exist or is not a directory (names it).
    """
    found: dict[Path, None] = {}
    for root in roots:
        base = Path(root).resolve()
        if not base.is_dir():
            raise FileNotFoundError(f"{root} is not a directory: pass directories holding use cases "
                                    f"(a {CONFIG_NAME} each, or below them)")
        for directory, subdirs, files in os.walk(base):
            depth = len(Path(directory).relative_to(base).parts)
            subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith(".")
                                and depth < max_depth)
            if CONFIG_NAME in files:
                found[Path(directory)] = None
    return sorted(found)
