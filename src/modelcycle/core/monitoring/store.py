"""The monitoring store: subscriptions, payload and feedback records, measurements (SQLAlchemy 2).

SQLite by default (``sqlite:///<use case>/.modelcycle/monitoring.db``, WAL journal,
``synchronous=NORMAL``, a 30 s busy timeout so the endpoint's drainer and the CLI can both write);
PostgreSQL (``postgresql+psycopg://...``) when ``monitoring.database_url`` or
``MODELCYCLE_DATABASE_URL`` names one. Tables are prefixed ``mc_`` so they can share a database.

Payload records are keyed by ``scoring_id`` (a primary key): inserts use ``ON CONFLICT DO
NOTHING``, so replaying a journal is idempotent. Each batch is one transaction that also moves
the journal segment's drained offset, so the offset never runs ahead of the records.

Payload records are :class:`~modelcycle.core.monitoring.records.PayloadRecord` tuples (one per
image: raw ``C×H×W`` uint8 pixels, float32 probabilities, and the ``mean_intensity`` and
``ink_fraction`` computed when the record is built, so image drift never re-reads the inputs;
one per tabular record: its float32 values, which per-feature drift reads back).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from modelcycle.core.sql import forget_engine, mask_url, shared_engine
from modelcycle.core.sql import resolve_database_url as _resolve
from sqlalchemy.exc import SQLAlchemyError

from modelcycle.core.monitoring.errors import MonitoringError
from modelcycle.core.monitoring.records import PAYLOAD_COLUMNS, PayloadRecord

__all__ = ["MonitoringStore", "resolve_database_url", "mask_url", "DEFAULT_DB_NAME", "metadata"]

DEFAULT_DB_NAME = "monitoring.db"
_CHUNK = 500  # ids per IN (...) clause
_ROWS_PER_INSERT = 400  # 4,800 parameters: within SQLite's (32,766) and PostgreSQL's (65,535) limits

metadata = sa.MetaData()

subscriptions = sa.Table(
    "mc_subscriptions", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("use_case", sa.String(128), nullable=False, index=True),
    sa.Column("deployment_id", sa.String(128), nullable=False, index=True),
    sa.Column("asset_revision", sa.String(64)),
    sa.Column("endpoint_url", sa.String(256)),
    sa.Column("payload_schema", sa.JSON, nullable=False),
    sa.Column("monitors", sa.JSON, nullable=False),
    sa.Column("baseline", sa.JSON),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float),
)

payload = sa.Table(
    "mc_payload", metadata,
    sa.Column("scoring_id", sa.String(80), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("scoring_timestamp", sa.Float, nullable=False),
    sa.Column("deployment_id", sa.String(128), nullable=False),
    sa.Column("asset_revision", sa.String(64)),
    sa.Column("scoring_input", sa.LargeBinary),
    sa.Column("prediction", sa.Integer),
    sa.Column("probability", sa.LargeBinary),
    sa.Column("prediction_probability", sa.Float),
    sa.Column("latency_ms", sa.Float),
    sa.Column("mean_intensity", sa.Float),
    sa.Column("ink_fraction", sa.Float),
    # a covering index: the drift window never reads the rows (and their stored inputs)
    sa.Index("ix_mc_payload_drift", "deployment_id", "scoring_timestamp", "prediction", "prediction_probability",
             "mean_intensity", "ink_fraction"),
)

feedback = sa.Table(
    "mc_feedback", metadata,
    sa.Column("scoring_id", sa.String(80), primary_key=True),
    sa.Column("deployment_id", sa.String(128), nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("feedback_timestamp", sa.Float, nullable=False),
    sa.Index("ix_mc_feedback_deployment_time", "deployment_id", "feedback_timestamp"),
)

measurements = sa.Table(
    "mc_measurements", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("subscription_id", sa.String(32), nullable=False, index=True),
    sa.Column("monitor", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("timestamp", sa.Float, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("thresholds", sa.JSON, nullable=False),
    sa.Column("violations", sa.JSON, nullable=False),
    sa.Column("records", sa.JSON, nullable=False),
    sa.Column("issue_count", sa.Integer, nullable=False),
    sa.Column("details", sa.JSON),
    sa.Column("message", sa.Text),
)

journal_offsets = sa.Table(
    "mc_journal_offsets", metadata,
    sa.Column("journal_id", sa.String(32), primary_key=True),
    sa.Column("deployment_id", sa.String(128), nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

forwarded = sa.Table(
    "mc_forwarded", metadata,
    # a remote data set (e.g. an OpenScale payload or feedback data set) and a record it holds
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("scoring_id", sa.String(80), primary_key=True),
    sa.Column("forwarded_at", sa.Float, nullable=False),
)


def resolve_database_url(configured: Any, work_dir: Path) -> str:
    """``monitoring.database_url`` (str or SecretStr), else ``MODELCYCLE_DATABASE_URL``, else
    SQLite at ``work_dir/monitoring.db``."""
    return _resolve(configured, work_dir, DEFAULT_DB_NAME)


def _engine(url: str) -> Engine:
    return shared_engine(url, ("synchronous=NORMAL",))


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MonitoringStore:
    """Typed access to the monitoring tables of one database.

    Args:
        url: a SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``).
        create: create missing tables (idempotent; safe when several processes start at once).

    Raises:
        MonitoringError: the database cannot be reached or its tables cannot be created.
    """

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        self.engine = _engine(url)
        self.dialect = self.engine.dialect.name
        self._insert_statements: dict[int, str] = {}
        if create:
            self._create_tables()

    def __repr__(self) -> str:
        return f"MonitoringStore({mask_url(self.url)!r})"

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def _create_tables(self) -> None:
        for attempt in range(3):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                return
            except SQLAlchemyError as exc:  # two processes creating at once: the loser retries
                if attempt == 2:  # forget the engine: its pooled connections may point at a bad file
                    forget_engine(self.engine)
                    raise MonitoringError(f"cannot open the monitoring store {self.masked_url}: {exc}") from exc
                time.sleep(0.2 * (attempt + 1))

    # -- dialect helpers ---------------------------------------------------------------------
    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            return None
        return insert(table)

    def _insert_ignore(self, conn: sa.Connection, table: sa.Table, key: str, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows``, skipping those whose ``key`` exists (ON CONFLICT DO NOTHING)."""
        if not rows:
            return
        stmt = self._insert(table)
        if stmt is not None:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=[key]), rows)
            return
        column = table.c[key]  # other dialects: filter the keys already present, then insert
        fresh = {row[key]: row for row in rows}
        for chunk in _chunks(list(fresh)):
            for (existing,) in conn.execute(sa.select(column).where(column.in_(chunk))):
                fresh.pop(existing, None)
        if fresh:
            conn.execute(table.insert(), list(fresh.values()))

    def _upsert(self, conn: sa.Connection, table: sa.Table, key: str, rows: list[dict[str, Any]], update: Sequence[str]) -> None:
        if not rows:
            return
        stmt = self._insert(table)
        if stmt is not None:
            conn.execute(
                stmt.on_conflict_do_update(index_elements=[key], set_={c: stmt.excluded[c] for c in update}), rows
            )
            return
        column = table.c[key]
        for row in rows:
            if conn.execute(sa.update(table).where(column == row[key]).values({c: row[c] for c in update})).rowcount == 0:
                conn.execute(table.insert(), [row])

    # -- subscriptions -----------------------------------------------------------------------
    def create_subscription(
        self, use_case: str, deployment_id: str, asset_revision: str | None, endpoint_url: str | None,
        payload_schema: list[dict[str, Any]], monitors: dict[str, Any], baseline: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Create a subscription; any other active one of ``use_case`` is marked deleted."""
        now = time.time()
        row = {
            "id": uuid.uuid4().hex, "use_case": use_case, "deployment_id": deployment_id,
            "asset_revision": asset_revision, "endpoint_url": endpoint_url, "payload_schema": payload_schema,
            "monitors": monitors, "baseline": baseline, "created_at": now, "deleted_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(subscriptions)
                .where(subscriptions.c.use_case == use_case, subscriptions.c.deleted_at.is_(None))
                .values(deleted_at=now)
            )
            conn.execute(subscriptions.insert(), [row])
        return row

    def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(subscriptions).where(subscriptions.c.id == subscription_id)).mappings().first()
        return dict(found) if found else None

    def active_subscription(self, use_case: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(subscriptions)
                .where(subscriptions.c.use_case == use_case, subscriptions.c.deleted_at.is_(None))
                .order_by(subscriptions.c.created_at.desc())
            ).mappings().first()
        return dict(found) if found else None

    def delete_subscription(self, subscription_id: str) -> bool:
        """Mark the subscription deleted; True when it was active."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(subscriptions)
                .where(subscriptions.c.id == subscription_id, subscriptions.c.deleted_at.is_(None))
                .values(deleted_at=time.time())
            )
        return result.rowcount > 0

    def delete_records(self, deployment_id: str, subscription_id: str | None = None) -> dict[str, int]:
        """Delete the deployment's payload and feedback records (and the subscription's
        measurements); returns the counts removed."""
        with self.engine.begin() as conn:
            counts = {
                "payload_records": conn.execute(sa.delete(payload).where(payload.c.deployment_id == deployment_id)).rowcount,
                "feedback_records": conn.execute(sa.delete(feedback).where(feedback.c.deployment_id == deployment_id)).rowcount,
            }
            if subscription_id:
                counts["measurements"] = conn.execute(
                    sa.delete(measurements).where(measurements.c.subscription_id == subscription_id)
                ).rowcount
            conn.execute(sa.delete(journal_offsets).where(journal_offsets.c.deployment_id == deployment_id))
        return counts

    # -- payload -----------------------------------------------------------------------------
    def _bulk_insert_payload(self, conn: sa.Connection, rows: Sequence[PayloadRecord]) -> None:
        """``INSERT ... VALUES (...), (...), ... ON CONFLICT (scoring_id) DO NOTHING``, up to
        ``_ROWS_PER_INSERT`` rows per statement, on the driver's cursor (PostgreSQL with psycopg 3:
        COPY into a staging table, then one insert). Multi-row statements,
        because executemany releases and retakes the GIL around every row, which stalls the
        endpoint's event loop thread; the driver's cursor, because SQLAlchemy's per-row parameter
        processing would cost more than the insert itself."""
        if self.dialect not in ("sqlite", "postgresql"):
            self._insert_ignore(conn, payload, "scoring_id", [row._asdict() for row in rows])
            return
        per_insert = _ROWS_PER_INSERT
        if self.dialect == "sqlite":
            import sqlite3

            if sqlite3.sqlite_version_info < (3, 32):  # older SQLite binds at most 999 parameters
                per_insert = 999 // len(PAYLOAD_COLUMNS)
        cursor = conn.connection.dbapi_connection.cursor()
        if self.dialect == "postgresql" and hasattr(cursor, "copy"):  # psycopg 3: COPY, then one INSERT
            try:
                self._copy_payload(cursor, rows)
            finally:
                cursor.close()
            return
        try:
            start = 0
            while start < len(rows):
                # statement sizes from a fixed set, so the driver's statement cache keeps them prepared
                size = next(s for s in (per_insert, 100, 25, 5, 1) if s <= min(per_insert, len(rows) - start))
                chunk = rows[start:start + size]
                cursor.execute(self._insert_sql(size), [value for row in chunk for value in row])
                start += size
        finally:
            cursor.close()

    @staticmethod
    def _copy_payload(cursor: Any, rows: Sequence[PayloadRecord]) -> None:
        """COPY into a session-local staging table (emptied at commit), then ``INSERT ... SELECT
        ... ON CONFLICT DO NOTHING``: a quarter of the client CPU of multi-row INSERTs."""
        columns = ", ".join(PAYLOAD_COLUMNS)
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS mc_payload_stage (LIKE {payload.name}) ON COMMIT DELETE ROWS")
        with cursor.copy(f"COPY mc_payload_stage ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"INSERT INTO {payload.name} ({columns}) SELECT {columns} FROM mc_payload_stage "
                       "ON CONFLICT (scoring_id) DO NOTHING")

    def _insert_sql(self, count: int) -> str:
        sql = self._insert_statements.get(count)
        if sql is None:
            marker = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
            one = "(" + ", ".join([marker] * len(PAYLOAD_COLUMNS)) + ")"
            sql = (f"INSERT INTO {payload.name} ({', '.join(PAYLOAD_COLUMNS)}) VALUES {', '.join([one] * count)} "
                   "ON CONFLICT (scoring_id) DO NOTHING")
            self._insert_statements[count] = sql
        return sql

    def ingest(self, rows: Sequence[PayloadRecord], journal: tuple[str, str, int] | None = None) -> None:
        """Insert the payload records ``rows``, skipping scoring ids already stored, and in the
        same transaction record how far their source log is stored: ``journal = (journal_id,
        deployment_id, offset)`` (a payload logger resumes from :meth:`journal_offset`)."""
        with self.engine.begin() as conn:
            if rows:
                self._bulk_insert_payload(conn, rows)
            if journal is not None:
                journal_id, deployment_id, offset = journal
                self._upsert(
                    conn, journal_offsets, "journal_id",
                    [{"journal_id": journal_id, "deployment_id": deployment_id, "offset": offset, "updated_at": time.time()}],
                    ("offset", "updated_at"),
                )

    def journal_offset(self, journal_id: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(journal_offsets.c.offset).where(journal_offsets.c.journal_id == journal_id)
            ).scalar_one_or_none()

    def forget_journal(self, journal_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(journal_offsets).where(journal_offsets.c.journal_id == journal_id))

    def payload_count(self, deployment_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(payload).where(payload.c.deployment_id == deployment_id)
            ).scalar_one())

    def existing_scoring_ids(self, scoring_ids: Sequence[str], deployment_id: str | None = None) -> set[str]:
        """The subset of ``scoring_ids`` present in the payload log (of ``deployment_id``)."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(list(scoring_ids)):
                query = sa.select(payload.c.scoring_id).where(payload.c.scoring_id.in_(chunk))
                if deployment_id is not None:
                    query = query.where(payload.c.deployment_id == deployment_id)
                found.update(conn.execute(query).scalars())
        return found

    def payload_records(
        self, deployment_id: str, limit: int | None = None, with_input: bool = True, unlabelled: bool = False,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Payload records of ``deployment_id``, oldest first (``unlabelled``: no feedback yet)."""
        columns = [c for c in payload.c if with_input or c.name != "scoring_input"]
        query = sa.select(*columns).where(payload.c.deployment_id == deployment_id)
        if unlabelled:
            query = query.where(~sa.exists().where(feedback.c.scoring_id == payload.c.scoring_id))
        query = query.order_by(payload.c.scoring_timestamp, payload.c.scoring_id)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def _rows(self, query: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run a read of many rows. On SQLite and PostgreSQL the driver's cursor runs ``sql``
        (``?`` placeholders, rewritten for the driver) and its rows are taken as they are:
        SQLAlchemy's per-row result handling costs more than the query."""
        with self.engine.connect() as conn:
            if self.dialect in ("sqlite", "postgresql"):
                if self.engine.dialect.paramstyle != "qmark":
                    sql = sql.replace("?", "%s")
                cursor = conn.connection.dbapi_connection.cursor()
                try:
                    cursor.execute(sql, params)
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
            else:
                rows = [tuple(row) for row in conn.execute(query)]
        return rows

    def drift_window(self, deployment_id: str, limit: int, since: float | None = None,
                     at_least: int = 0, record_width: int | None = None) -> dict[str, np.ndarray]:
        """The prediction, confidence, input statistics and ``scoring_timestamp`` of the
        deployment's most recent records, newest first: at most ``limit`` of them, only those
        scored after ``since`` when given — unless fewer than ``at_least`` are, in which case the
        most recent ``at_least`` (of any time) are returned.

        With ``record_width`` (tabular records of that many fields) the window also holds
        ``records``, float32 ``(n, record_width)``: the stored inputs, and only the records whose
        input has that width (an earlier model's records of another schema are left out)."""
        columns: tuple[Any, ...] = (payload.c.prediction, payload.c.prediction_probability, payload.c.mean_intensity,
                                    payload.c.ink_fraction, payload.c.scoring_timestamp)
        if record_width is not None:
            columns += (payload.c.scoring_input,)
        rows = self._recent(deployment_id, columns, limit, since)
        if since is not None and len(rows) < at_least:
            rows = self._recent(deployment_id, columns, min(at_least, limit), None)
        if record_width is not None:
            return self._records_window(rows, record_width)
        array = np.array(rows, dtype=np.float64).reshape(len(rows), 5)
        return {
            "prediction": array[:, 0].astype(np.int64),
            "confidence": array[:, 1],
            "mean_intensity": array[:, 2],
            "ink_fraction": array[:, 3],
            "scoring_timestamp": array[:, 4],
        }

    @staticmethod
    def _records_window(rows: list[tuple[Any, ...]], width: int) -> dict[str, np.ndarray]:
        size = 4 * width
        rows = [row for row in rows if row[5] is not None and len(row[5]) == size]
        array = np.array([row[:2] + (row[4],) for row in rows], dtype=np.float64).reshape(len(rows), 3)
        records = np.frombuffer(b"".join(bytes(row[5]) for row in rows), "<f4").reshape(len(rows), width)
        return {"prediction": array[:, 0].astype(np.int64), "confidence": array[:, 1],
                "scoring_timestamp": array[:, 2], "records": records}

    def _recent(self, deployment_id: str, columns: Sequence[Any], limit: int, since: float | None) -> list[tuple[Any, ...]]:
        """``columns`` of the newest ``limit`` records of ``deployment_id`` (scored after ``since``)."""
        query = sa.select(*columns).where(payload.c.deployment_id == deployment_id)
        sql = f"SELECT {', '.join(c.name for c in columns)} FROM {payload.name} WHERE deployment_id = ?"
        params: tuple[Any, ...] = (deployment_id,)
        if since is not None:
            query = query.where(payload.c.scoring_timestamp > since)
            sql += " AND scoring_timestamp > ?"
            params += (float(since),)
        query = query.order_by(payload.c.scoring_timestamp.desc()).limit(limit)
        return self._rows(query, sql + " ORDER BY scoring_timestamp DESC LIMIT ?", params + (int(limit),))

    # -- feedback ----------------------------------------------------------------------------
    def add_feedback(self, labels: Mapping[str, int], deployment_id: str) -> int:
        """Attach ``labels`` ({scoring_id: label}) to payload records of ``deployment_id``.

        A scoring id given twice keeps the latest label (ground truth can be corrected).

        Raises:
            UnknownScoringIdError: some ids are not in that deployment's payload log (nothing
                is stored then).
        """
        from modelcycle.core.monitoring.errors import UnknownScoringIdError

        ids = list(labels)
        unknown = sorted(set(ids) - self.existing_scoring_ids(ids, deployment_id))
        if unknown:
            raise UnknownScoringIdError(unknown, deployment_id)
        now = time.time()
        rows = [{"scoring_id": k, "deployment_id": deployment_id, "label": int(v), "feedback_timestamp": now} for k, v in labels.items()]
        with self.engine.begin() as conn:
            for chunk in _chunks(rows, 5000):
                self._upsert(conn, feedback, "scoring_id", list(chunk), ("label", "feedback_timestamp"))
        return len(rows)

    def feedback_count(self, deployment_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(feedback).where(feedback.c.deployment_id == deployment_id)
            ).scalar_one())

    def quality_data(self, deployment_id: str, limit: int | None = None, with_ids: bool = False) -> dict[str, Any]:
        """Feedback joined with its payload: ``labels``, ``predictions`` (the stored prediction is
        the probabilities' argmax), ``probabilities`` ``(N, K)`` float32, and ``scoring_ids`` when
        asked; the most recent ``limit`` feedback records when given, else all (in no order)."""
        selected = [feedback.c.label, payload.c.probability] + ([feedback.c.scoring_id] if with_ids else [])
        query = sa.select(*selected).join(payload, payload.c.scoring_id == feedback.c.scoring_id).where(
            feedback.c.deployment_id == deployment_id)
        sql = (f"SELECT f.label, p.probability{', f.scoring_id' if with_ids else ''} FROM {feedback.name} f "
               f"JOIN {payload.name} p ON p.scoring_id = f.scoring_id WHERE f.deployment_id = ?")
        params: tuple[Any, ...] = (deployment_id,)
        if limit is not None:
            query = query.order_by(feedback.c.feedback_timestamp.desc(), feedback.c.scoring_id).limit(limit)
            sql += " ORDER BY f.feedback_timestamp DESC, f.scoring_id LIMIT ?"
            params += (int(limit),)
        rows = self._rows(query, sql, params)
        n = len(rows)
        probabilities = np.frombuffer(b"".join([row[1] for row in rows]), dtype="<f4").reshape(n, -1) if n \
            else np.zeros((0, 0), np.float32)
        data: dict[str, Any] = {
            "labels": np.fromiter((row[0] for row in rows), np.int64, n),
            "predictions": probabilities.argmax(axis=1) if n else np.zeros(0, np.int64),
            "probabilities": probabilities,
        }
        if with_ids:
            data["scoring_ids"] = [row[2] for row in rows]
        return data

    # -- forwarding to a remote backend -------------------------------------------------------
    def unforwarded_payload(self, deployment_id: str, target: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` payload records of ``deployment_id`` not yet sent to ``target``,
        oldest first."""
        sent = sa.select(forwarded.c.scoring_id).where(forwarded.c.target == target, forwarded.c.scoring_id == payload.c.scoring_id)
        query = (sa.select(payload).where(payload.c.deployment_id == deployment_id, ~sa.exists(sent))
                 .order_by(payload.c.scoring_timestamp, payload.c.scoring_id).limit(limit))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def unforwarded_feedback(self, deployment_id: str, target: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` feedback records (``scoring_id``, ``label``, the scored ``prediction``
        and ``probability``) of ``deployment_id`` not yet sent to ``target``."""
        sent = sa.select(forwarded.c.scoring_id).where(forwarded.c.target == target, forwarded.c.scoring_id == feedback.c.scoring_id)
        query = (sa.select(feedback.c.scoring_id, feedback.c.label, payload.c.prediction, payload.c.probability)
                 .join(payload, payload.c.scoring_id == feedback.c.scoring_id)
                 .where(feedback.c.deployment_id == deployment_id, ~sa.exists(sent))
                 .order_by(feedback.c.feedback_timestamp, feedback.c.scoring_id).limit(limit))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def mark_forwarded(self, target: str, scoring_ids: Sequence[str]) -> None:
        """Record that ``target`` holds these records (idempotent)."""
        now = time.time()
        rows = [{"target": target, "scoring_id": scoring_id, "forwarded_at": now} for scoring_id in scoring_ids]
        with self.engine.begin() as conn:
            for chunk in _chunks(rows, _ROWS_PER_INSERT):
                stmt = self._insert(forwarded)
                if stmt is not None:
                    conn.execute(stmt.on_conflict_do_nothing(index_elements=["target", "scoring_id"]), list(chunk))
                else:
                    conn.execute(forwarded.insert(), list(chunk))

    def forwarded_count(self, target: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(forwarded).where(forwarded.c.target == target)).scalar_one())

    def forget_forwarded(self, targets: Iterable[str]) -> None:
        """Drop the forwarding marks of remote data sets that are gone."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(forwarded).where(forwarded.c.target.in_(list(targets))))

    # -- measurements ------------------------------------------------------------------------
    def add_measurement(self, measurement: dict[str, Any]) -> dict[str, Any]:
        row = {column.name: measurement.get(column.name) for column in measurements.c}
        row["id"] = row["id"] or f"{time.time_ns():020d}{uuid.uuid4().hex[:12]}"  # sorts in insertion order
        row["timestamp"] = row["timestamp"] or time.time()
        for key in ("metrics", "records"):
            row[key] = row[key] or {}
        for key in ("thresholds", "violations"):
            row[key] = row[key] or []
        row["issue_count"] = len(row["violations"])
        with self.engine.begin() as conn:
            conn.execute(measurements.insert(), [row])
        return row

    def latest_measurement(self, subscription_id: str, monitor: str, status: str = "finished") -> dict[str, Any] | None:
        """The subscription's most recent measurement of ``monitor`` with ``status``, if any."""
        query = (sa.select(measurements)
                 .where(measurements.c.subscription_id == subscription_id, measurements.c.monitor == monitor,
                        measurements.c.status == status)
                 .order_by(measurements.c.timestamp.desc(), measurements.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        return dict(found) if found else None

    def measurements(self, subscription_id: str | None = None, limit: int | None = None, monitor: str | None = None,
                     use_case: str | None = None) -> list[dict[str, Any]]:
        """Stored measurements, oldest first (the last ``limit`` of them when given), of one
        subscription or of every subscription of ``use_case``."""
        query = sa.select(measurements)
        if subscription_id is not None:
            query = query.where(measurements.c.subscription_id == subscription_id)
        if use_case is not None:
            query = query.where(measurements.c.subscription_id.in_(
                sa.select(subscriptions.c.id).where(subscriptions.c.use_case == use_case)))
        if monitor is not None:
            query = query.where(measurements.c.monitor == monitor)
        query = query.order_by(measurements.c.timestamp.desc(), measurements.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
        return rows[::-1]
