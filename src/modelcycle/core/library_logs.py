"""Keep the libraries modelcycle drives (MLflow, alembic, SQLAlchemy) off the terminal.

Their INFO lines ("Creating initial MLflow database tables...") and the warnings their plugins
raise while being imported go to ``.modelcycle/logs/libraries.log``; records of level ERROR and
above still reach stderr, so a real failure is never hidden.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

__all__ = ["LIBRARY_LOGGERS", "LOG_FILE", "route_library_logs", "import_quietly"]

#: Loggers routed to the file with the level they log at there (``modelcycle.libraries``
#: carries captured import warnings; SQLAlchemy at INFO would log every statement).
LIBRARY_LOGGERS = {"mlflow": logging.INFO, "alembic": logging.INFO, "sqlalchemy": logging.WARNING,
                   "huey": logging.WARNING, "modelcycle.libraries": logging.INFO}
#: Where their records go, relative to the use case's ``.modelcycle`` directory.
LOG_FILE = Path("logs") / "libraries.log"

_log = logging.getLogger("modelcycle.libraries")


class _LazyFileHandler(logging.FileHandler):
    """A file handler that creates its directory and file only when the first record arrives."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def route_library_logs(work_dir: Path) -> Path:
    """Send the library loggers' records to ``work_dir/logs/libraries.log`` (INFO and above) and
    their errors to stderr too; stop MLflow from installing its own terminal handler. Idempotent;
    a later call for another use case moves the file. Returns the log file's path."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    path = (Path(work_dir) / LOG_FILE).resolve()
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.ERROR)
    errors.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    to_file = _LazyFileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name, level in LIBRARY_LOGGERS.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.close()
        logger.handlers = [to_file, errors]
        logger.setLevel(level)
        logger.propagate = False
    return path


def import_quietly(name: str) -> ModuleType:
    """Import module ``name``, logging the warnings raised meanwhile to the library log instead of
    printing them (MLflow's store plugins warn while MLflow imports itself)."""
    if name in sys.modules:
        return sys.modules[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(name)
    for warning in caught:
        _log.warning("while importing %s: %s: %s", name, warning.category.__name__, warning.message)
    return module
