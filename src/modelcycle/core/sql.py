"""SQL plumbing the stores share: one engine per URL, SQLite tuned for concurrent writers,
URLs safe to print."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

__all__ = ["mask_url", "shared_engine", "forget_engine", "resolve_database_url"]

_ENGINES: dict[tuple[str, tuple[str, ...]], Engine] = {}
_LOCK = threading.Lock()
_SQLITE_PRAGMAS = ("journal_mode=WAL", "busy_timeout=30000")


def mask_url(url: str) -> str:
    """The URL with its password hidden (safe to print and to keep in state)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands; show nothing secret
        return "<unparseable database url>"


def resolve_database_url(configured: Any, work_dir: Path, default_name: str) -> str:
    """The configured URL (str or SecretStr), else ``MODELCYCLE_DATABASE_URL``, else SQLite at
    ``work_dir/default_name``."""
    if configured is not None and hasattr(configured, "get_secret_value"):
        configured = configured.get_secret_value()
    if configured:
        return str(configured)
    return os.environ.get("MODELCYCLE_DATABASE_URL") or f"sqlite:///{(Path(work_dir) / default_name).resolve()}"


def shared_engine(url: str, sqlite_pragmas: Sequence[str] = ()) -> Engine:
    """One engine per URL and process. SQLite files get WAL, a 30 s busy timeout and the extra
    ``sqlite_pragmas`` on every connection; other databases get pre-ping pooling."""
    key = (url, tuple(sqlite_pragmas))
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return engine
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 30})
            pragmas = (*_SQLITE_PRAGMAS, *sqlite_pragmas)

            def on_connect(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                for pragma in pragmas:
                    cursor.execute(f"PRAGMA {pragma}")
                cursor.close()

            event.listen(engine, "connect", on_connect)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
        _ENGINES[key] = engine
        return engine


def forget_engine(engine: Engine) -> None:
    """Drop ``engine`` from the cache and close its pool (its connections may be broken)."""
    with _LOCK:
        for key, cached in list(_ENGINES.items()):
            if cached is engine:
                del _ENGINES[key]
    engine.dispose()
