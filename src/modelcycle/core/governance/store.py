"""The governance store: use cases → model assets → deployments, stages, facts, audit (SQLAlchemy 2).

SQLite by default (``sqlite:///<use case>/.modelcycle/governance.db``, WAL journal, 30 s busy
timeout); PostgreSQL (``postgresql+psycopg://...``) when ``governance.database_url`` or
``MODELCYCLE_DATABASE_URL`` names one, so several use cases can share one inventory. Tables are
prefixed ``gov_``.

* ``gov_use_cases``: one per use case name (AI Factsheets' model entry / AI use case).
* ``gov_assets``: one per trained run (run id, MLflow run id, framework, every fact as JSON, the
  current lifecycle stage, and the remote ids when mirrored to IBM AI Factsheets).
* ``gov_deployments``: the endpoints that served an asset (name, url, platform, model data,
  framework, entry point / image), with ``created_at`` and ``removed_at``.
* ``gov_facts``: custom facts, append-only (the latest value per key is the current one).
* ``gov_audit``: the append-only audit trail — who, when, what (stage moves with from/to and why,
  imports, deployments, facts, remote exports). Nothing updates or deletes its rows, except
  ``purge_use_case`` (``cleanup --governance``), which removes everything of one use case.

Times are ISO-8601 UTC strings (they sort as text on every backend).
"""

from __future__ import annotations

import getpass
import os
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from modelcycle.core.sql import mask_url, shared_engine
from modelcycle.core.sql import resolve_database_url as _resolve
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from modelcycle.core.governance.errors import AssetNotFoundError, GovernanceError
from modelcycle.core.governance.stages import STAGES, check_transition
from modelcycle.core.state import utcnow

__all__ = ["GovernanceStore", "resolve_database_url", "mask_url", "current_user", "DEFAULT_DB_NAME", "metadata"]

DEFAULT_DB_NAME = "governance.db"

metadata = sa.MetaData()

use_cases = sa.Table(
    "gov_use_cases", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("directory", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("framework", sa.String(64)),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
)

assets = sa.Table(
    "gov_assets", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("use_case_id", sa.String(32), sa.ForeignKey("gov_use_cases.id"), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("name", sa.String(160), nullable=False),
    sa.Column("framework", sa.String(64)),
    sa.Column("framework_version", sa.String(64)),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("created_at", sa.String(40)),
    sa.Column("imported_at", sa.String(40), nullable=False),
    sa.Column("model_dir", sa.Text),
    sa.Column("archive", sa.Text),
    sa.Column("dataset_name", sa.String(64)),
    sa.Column("dataset_checksums", sa.JSON),
    sa.Column("facts", sa.JSON, nullable=False),
    sa.Column("remote", sa.JSON),
    sa.UniqueConstraint("use_case_id", "run_id", name="uq_gov_assets_run"),
)

deployments = sa.Table(
    "gov_deployments", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("asset_id", sa.String(32), sa.ForeignKey("gov_assets.id"), nullable=False, index=True),
    sa.Column("use_case_id", sa.String(32), sa.ForeignKey("gov_use_cases.id"), nullable=False, index=True),
    sa.Column("name", sa.String(160), nullable=False),
    sa.Column("url", sa.Text),
    sa.Column("platform", sa.String(64)),
    sa.Column("model_data", sa.Text),
    sa.Column("framework", sa.String(64)),
    sa.Column("entry_point", sa.Text),
    sa.Column("image", sa.Text),
    sa.Column("created_at", sa.String(40)),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("removed_at", sa.String(40)),
    sa.Column("details", sa.JSON),
)

facts = sa.Table(
    "gov_facts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("asset_id", sa.String(32), sa.ForeignKey("gov_assets.id"), nullable=False, index=True),
    sa.Column("key", sa.String(128), nullable=False),
    sa.Column("value", sa.JSON),
    sa.Column("who", sa.String(128), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)

audit = sa.Table(
    "gov_audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("use_case_id", sa.String(32), nullable=False, index=True),
    sa.Column("asset_id", sa.String(32), index=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("who", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("from_stage", sa.String(16)),
    sa.Column("to_stage", sa.String(16)),
    sa.Column("reason", sa.Text),
    sa.Column("forced", sa.Boolean, nullable=False, default=False),
    sa.Column("details", sa.JSON),
)



def current_user() -> str:
    """Who acts: ``MODELCYCLE_USER``, else the login name, else ``uid <n>``."""
    named = os.environ.get("MODELCYCLE_USER", "").strip()
    if named:
        return named
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return f"uid {os.getuid()}"


def resolve_database_url(configured: Any, work_dir: Path) -> str:
    """``governance.database_url`` (str or SecretStr), else ``MODELCYCLE_DATABASE_URL``, else
    SQLite at ``work_dir/governance.db``."""
    return _resolve(configured, work_dir, DEFAULT_DB_NAME)


def _engine(url: str) -> Engine:
    return shared_engine(url, ("foreign_keys=ON",))


def _row(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class GovernanceStore:
    """Typed access to the governance tables of one database.

    Args:
        url: a SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``).
        create: create missing tables (idempotent).

    Raises:
        GovernanceError: the database cannot be reached or its tables cannot be created.
    """

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        self.engine = _engine(url)
        if create:
            for attempt in range(3):
                try:
                    metadata.create_all(self.engine, checkfirst=True)
                    break
                except SQLAlchemyError as exc:  # two processes creating at once: the loser retries
                    if attempt == 2:
                        raise GovernanceError(f"cannot open the governance store {self.masked_url}: {exc}") from exc
                    time.sleep(0.2 * (attempt + 1))

    def __repr__(self) -> str:
        return f"GovernanceStore({self.masked_url!r})"

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    # -- audit -------------------------------------------------------------------------------
    @staticmethod
    def _audit(conn: Any, use_case_id: str, action: str, who: str, asset_id: str | None = None,
               from_stage: str | None = None, to_stage: str | None = None, reason: str | None = None,
               forced: bool = False, details: dict[str, Any] | None = None, at: str | None = None) -> None:
        conn.execute(audit.insert().values(
            use_case_id=use_case_id, asset_id=asset_id, at=at or utcnow(), who=who, action=action,
            from_stage=from_stage, to_stage=to_stage, reason=reason, forced=forced, details=details,
        ))

    def record_event(self, use_case_id: str, action: str, who: str, asset_id: str | None = None,
                     reason: str | None = None, details: dict[str, Any] | None = None) -> None:
        """Append one audit row (e.g. an export to a remote service)."""
        with self.engine.begin() as conn:
            self._audit(conn, use_case_id, action, who, asset_id=asset_id, reason=reason, details=details)

    def audit_trail(self, use_case_id: str | None = None, asset_id: str | None = None,
                    action: str | None = None) -> list[dict[str, Any]]:
        """Audit rows, oldest first, filtered by use case, asset and/or action."""
        query = sa.select(audit).order_by(audit.c.id)
        if use_case_id:
            query = query.where(audit.c.use_case_id == use_case_id)
        if asset_id:
            query = query.where(audit.c.asset_id == asset_id)
        if action:
            query = query.where(audit.c.action == action)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    # -- use cases ---------------------------------------------------------------------------
    def get_use_case(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(use_cases).where(use_cases.c.name == name)).first()
        return _row(row) if row else None

    def ensure_use_case(self, name: str, who: str, directory: str | None = None, description: str | None = None,
                        framework: str | None = None) -> dict[str, Any]:
        """The use case named ``name``, created (and audited) on first use."""
        found = self.get_use_case(name)
        if found:
            return found
        record = {
            "id": uuid.uuid4().hex, "name": name, "directory": directory, "description": description,
            "framework": framework, "created_at": utcnow(), "created_by": who,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(use_cases.insert().values(**record))
                self._audit(conn, record["id"], "use_case.created", who, details={"name": name, "directory": directory})
        except IntegrityError:  # created concurrently
            found = self.get_use_case(name)
            if found:
                return found
            raise
        return record

    def list_use_cases(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(use_cases).order_by(use_cases.c.name))]

    # -- assets ------------------------------------------------------------------------------
    def assets(self, use_case_id: str) -> list[dict[str, Any]]:
        """The use case's model assets, oldest first."""
        query = sa.select(assets).where(assets.c.use_case_id == use_case_id).order_by(assets.c.created_at, assets.c.imported_at)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def known_run_ids(self, use_case_id: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(assets.c.run_id).where(assets.c.use_case_id == use_case_id)).scalars())

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(assets).where(assets.c.id == asset_id)).first()
        if row is None:
            raise AssetNotFoundError(f"no model asset with id {asset_id}")
        return _row(row)

    def find_asset(self, use_case_id: str, run_id: str) -> dict[str, Any]:
        """The asset whose run id (or MLflow run id, or asset id) starts with ``run_id``.

        Raises:
            AssetNotFoundError: none or several match; the message lists the known runs.
        """
        candidates = self.assets(use_case_id)
        matches = [
            a for a in candidates
            if a["run_id"].startswith(run_id) or (a["mlflow_run_id"] or "").startswith(run_id) or a["id"].startswith(run_id)
        ]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(a["run_id"][:8] for a in candidates) or "none (train first)"
        raise AssetNotFoundError(f"run '{run_id}' matches {len(matches)} model assets; known runs: {known}")

    def add_asset(self, use_case_id: str, record: dict[str, Any], who: str, reason: str) -> dict[str, Any] | None:
        """Insert a model asset in stage ``develop`` and audit it; ``None`` if its run is known."""
        row = {
            "id": uuid.uuid4().hex, "use_case_id": use_case_id, "stage": STAGES[0], "imported_at": utcnow(),
            "remote": None, **record,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(assets.insert().values(**row))
                self._audit(conn, use_case_id, "asset.imported", who, asset_id=row["id"],
                            details={"run_id": row["run_id"], "mlflow_run_id": row.get("mlflow_run_id")})
                self._audit(conn, use_case_id, "stage", who, asset_id=row["id"], from_stage=None,
                            to_stage=STAGES[0], reason=reason)
        except IntegrityError:  # another process imported it first
            return None
        return row

    def move_stage(self, asset_id: str, target: str, who: str, reason: str | None = None, force: bool = False,
                   source: str = "cli") -> dict[str, Any]:
        """Move an asset to ``target`` (checked against the transition rules) and audit it.

        Returns:
            ``{"asset_id", "from", "to", "moved"}``; ``moved`` is false when already there.

        Raises:
            TransitionError: the move is not allowed (lists the allowed next stages).
        """
        with self.engine.begin() as conn:
            query = sa.select(assets.c.stage, assets.c.use_case_id).where(assets.c.id == asset_id)
            if self.engine.dialect.name != "sqlite":
                query = query.with_for_update()
            while True:
                row = conn.execute(query).first()
                if row is None:
                    raise AssetNotFoundError(f"no model asset with id {asset_id}")
                current, use_case_id = row.stage, row.use_case_id
                check_transition(current, target, force=force, reason=reason)
                if target == current:
                    return {"asset_id": asset_id, "from": current, "to": target, "moved": False}
                # only from the stage just read: SQLite reads without a lock, so a concurrent move
                # that committed since leaves nothing to update here, and the loop reads again
                moved = conn.execute(assets.update().where(assets.c.id == asset_id, assets.c.stage == current)
                                     .values(stage=target))
                if moved.rowcount == 1:
                    break
            self._audit(conn, use_case_id, "stage", who, asset_id=asset_id, from_stage=current, to_stage=target,
                        reason=reason, forced=force and target not in _forward(current), details={"source": source})
        return {"asset_id": asset_id, "from": current, "to": target, "moved": True}

    def stage_history(self, asset_id: str) -> list[dict[str, Any]]:
        return self.audit_trail(asset_id=asset_id, action="stage")

    def set_remote(self, asset_id: str, remote: dict[str, Any] | None) -> None:
        """Remember where the asset lives on a remote service (ids only, never credentials)."""
        with self.engine.begin() as conn:
            conn.execute(assets.update().where(assets.c.id == asset_id).values(remote=remote))

    # -- deployments -------------------------------------------------------------------------
    def deployments(self, asset_id: str | None = None, use_case_id: str | None = None,
                    active_only: bool = False) -> list[dict[str, Any]]:
        query = sa.select(deployments).order_by(deployments.c.recorded_at)
        if asset_id:
            query = query.where(deployments.c.asset_id == asset_id)
        if use_case_id:
            query = query.where(deployments.c.use_case_id == use_case_id)
        if active_only:
            query = query.where(deployments.c.removed_at.is_(None))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def record_deployment(self, asset: dict[str, Any], endpoint: dict[str, Any], who: str) -> dict[str, Any]:
        """Record (or refresh) the deployment of ``asset`` behind ``endpoint`` and audit it.

        ``endpoint`` holds ``name``, ``url``, ``platform``, ``model_data``, ``framework``,
        ``entry_point``, ``image``, ``created_at`` and any ``details``. An active record with the
        same endpoint name and start time is updated, not duplicated.
        """
        values = {k: endpoint.get(k) for k in ("name", "url", "platform", "model_data", "framework", "entry_point", "image", "created_at")}
        values["details"] = endpoint.get("details")
        with self.engine.begin() as conn:
            existing = conn.execute(
                sa.select(deployments).where(
                    deployments.c.asset_id == asset["id"], deployments.c.name == values["name"],
                    deployments.c.removed_at.is_(None),
                )
            ).first()
            if existing is not None and existing.created_at == values["created_at"]:
                conn.execute(deployments.update().where(deployments.c.id == existing.id).values(**values))
                record = {**_row(existing), **values}
            else:
                if existing is not None:  # same name, restarted: close the old record
                    conn.execute(deployments.update().where(deployments.c.id == existing.id).values(removed_at=utcnow()))
                record = {"id": uuid.uuid4().hex, "asset_id": asset["id"], "use_case_id": asset["use_case_id"],
                          "recorded_at": utcnow(), "removed_at": None, **values}
                conn.execute(deployments.insert().values(**record))
                self._audit(conn, asset["use_case_id"], "deployment.recorded", who, asset_id=asset["id"],
                            details={"endpoint": values["name"], "url": values["url"], "platform": values["platform"]})
        return record

    def close_deployments(self, use_case_id: str, who: str, keep: str | None = None, reason: str = "endpoint removed") -> int:
        """Mark the use case's active deployments removed (all, or all but the endpoint ``keep``)."""
        with self.engine.begin() as conn:
            query = sa.select(deployments).where(deployments.c.use_case_id == use_case_id, deployments.c.removed_at.is_(None))
            closed = 0
            for row in conn.execute(query).all():
                if keep is not None and row.name == keep:
                    continue
                conn.execute(deployments.update().where(deployments.c.id == row.id).values(removed_at=utcnow()))
                self._audit(conn, use_case_id, "deployment.removed", who, asset_id=row.asset_id, reason=reason,
                            details={"endpoint": row.name})
                closed += 1
        return closed

    # -- custom facts ------------------------------------------------------------------------
    def set_fact(self, asset: dict[str, Any], key: str, value: Any, who: str) -> dict[str, Any]:
        """Append a custom fact value (the latest per key is current) and audit it."""
        if not key or len(key) > 128:
            raise GovernanceError("a fact key must be 1-128 characters")
        record = {"asset_id": asset["id"], "key": key, "value": value, "who": who, "at": utcnow()}
        with self.engine.begin() as conn:
            conn.execute(facts.insert().values(**record))
            self._audit(conn, asset["use_case_id"], "fact.set", who, asset_id=asset["id"], details={"key": key, "value": value})
        return record

    def custom_facts(self, asset_id: str) -> dict[str, dict[str, Any]]:
        """``{key: {"value", "who", "at"}}`` — the latest value of each custom fact."""
        query = sa.select(facts).where(facts.c.asset_id == asset_id).order_by(facts.c.id)
        current: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                current[row.key] = {"value": row.value, "who": row.who, "at": row.at}
        return current

    # -- cleanup -----------------------------------------------------------------------------
    def purge_use_case(self, use_case_id: str) -> dict[str, int]:
        """Delete every record of the use case (assets, deployments, facts, audit, the use case)."""
        with self.engine.begin() as conn:
            asset_ids = list(conn.execute(sa.select(assets.c.id).where(assets.c.use_case_id == use_case_id)).scalars())
            counts = {"assets": len(asset_ids)}
            if asset_ids:
                counts["facts"] = conn.execute(facts.delete().where(facts.c.asset_id.in_(asset_ids))).rowcount
            counts["deployments"] = conn.execute(deployments.delete().where(deployments.c.use_case_id == use_case_id)).rowcount
            conn.execute(assets.delete().where(assets.c.use_case_id == use_case_id))
            counts["audit"] = conn.execute(audit.delete().where(audit.c.use_case_id == use_case_id)).rowcount
            conn.execute(use_cases.delete().where(use_cases.c.id == use_case_id))
        return counts


def _forward(current: str) -> tuple[str, ...]:
    index = STAGES.index(current)
    return STAGES[index + 1 : index + 2]
