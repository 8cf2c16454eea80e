"""Dialect-native bulk reads and writes for one cycle, on the caller's connection and transaction.

COPY on PostgreSQL for new rows and audit rows; executemany of a native upsert elsewhere
(sqlite3 loops in C, PyMySQL folds a batch into one multi-row INSERT). Values go to the driver
as plain tuples with the JSON already canonical text, so no per-row work is done twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.models import Record
from sync.pause_points import pause_point
from sync.reconcile import Stored
from sync.resources import Resource

# Rows per statement (and per IN-list): far below every dialect's parameter limit.
BATCH_SIZE = 1000
T = TypeVar("T")


def batched(items: Iterable[T], size: int = BATCH_SIZE) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.name == "sqlite" else "%s"


def _timestamp(conn: Connection, when: datetime) -> Any:
    """`when` as each driver stores our UTCDateTime columns (see sync.schema.UTCDateTime)."""
    if conn.dialect.name == "postgresql":
        return when
    # SQLite and MariaDB keep UTC wall time; SQLAlchemy's SQLite format is this one.
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class _DriverCursor:
    """A DBAPI cursor on the connection's own transaction, yielded with the statement to run.

    For COPY and for bulk reads, which bypass SQLAlchemy's execute(): this fires the engine's
    before_cursor_execute event itself (statement counters and test hooks keep working) and
    wraps driver errors as SQLAlchemy does.
    """

    def __init__(self, conn: Connection, statement: str) -> None:
        self._conn = conn
        self.statement = statement
        self._dbapi = conn.dialect.loaded_dbapi

    def __enter__(self) -> Any:
        self._cursor = self._conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        # SQLAlchemy wraps every listener to return (statement, parameters), as its own
        # execute() expects; a listener may rewrite the statement.
        for listener in self._conn.dispatch.before_cursor_execute:
            rewritten = listener(self._conn, self._cursor, self.statement, (), None, True)
            if isinstance(rewritten, tuple):
                self.statement = rewritten[0]
        return self._cursor, self.statement

    def __exit__(self, kind: Any, error: BaseException | None, _tb: Any) -> None:
        self._cursor.close()
        if isinstance(error, self._dbapi.Error):
            raise sa.exc.DBAPIError.instance(
                self.statement, None, error, self._dbapi.Error, dialect=self._conn.dialect
            ) from error


def read_stored(conn: Connection, resource: Resource, partner_id: str) -> Stored:
    """Live rows' id → content hash, and the soft-deleted ids, of one partner.

    Read with the driver's own fetchall into a dict: at 100,000 rows a Row object (or any
    object) per row costs more than the query.
    """
    table, mark = resource.table.name, _placeholder(conn)
    where = f"FROM {table} WHERE partner_id = {mark} AND deleted_at IS"
    with _DriverCursor(conn, f"SELECT id, raw_hash {where} NULL") as (cursor, sql):
        cursor.execute(sql, (partner_id,))
        live: dict[int, str] = dict(cursor)  # streamed: no list of 100,000 tuples first
    with _DriverCursor(conn, f"SELECT id {where} NOT NULL") as (cursor, sql):
        cursor.execute(sql, (partner_id,))
        deleted = {key for (key,) in cursor}
    return Stored(live, deleted)


def read_live_contents(
    conn: Connection, resource: Resource, partner_id: str
) -> dict[int, tuple[Any, tuple[Any, ...]]]:
    """Live rows' id → (raw as decoded JSON, typed column values), through SQLAlchemy's types.

    For a full compare only: it reads every document, where a cycle normally reads hashes.
    """
    table = resource.table
    columns = [table.c[name] for name in resource.typed_columns]
    rows = conn.execute(
        sa.select(table.c.id, table.c.raw, *columns).where(
            table.c.partner_id == partner_id, table.c.deleted_at.is_(None)
        )
    )
    return {row[0]: (row[1], tuple(row[2:])) for row in rows}


def read_documents(
    conn: Connection, resource: Resource, partner_id: str, keys: Sequence[int]
) -> dict[int, str]:
    """id → stored JSON text of the rows about to change (the audit's old_values)."""
    table = resource.table.name
    raw = "raw::text" if conn.dialect.name == "postgresql" else "raw"
    mark = _placeholder(conn)
    documents: dict[int, str] = {}
    for chunk in batched(keys):
        rows = conn.exec_driver_sql(
            f"SELECT id, {raw} FROM {table} WHERE partner_id = {mark} "
            f"AND id IN ({', '.join([mark] * len(chunk))})",
            (partner_id, *chunk),
        ).fetchall()
        for key, text in rows:
            documents[key] = text if isinstance(text, str) else text.decode("utf-8")
    return documents


def _row_columns(resource: Resource) -> list[str]:
    return [
        "partner_id", "id", *resource.typed_columns,
        "raw", "raw_hash", "first_seen_at", "updated_at", "deleted_at",
    ]  # fmt: skip


def _rows(
    resource: Resource, partner_id: str, records: Iterable[Record], stamp: Any
) -> Iterator[tuple[Any, ...]]:
    values = resource.typed_values
    for record in records:
        yield (
            partner_id, record.key, *values(record),
            record.text, record.digest, stamp, stamp, None,
        )  # fmt: skip


def insert_new(
    conn: Connection, resource: Resource, partner_id: str, records: list[Record], now: datetime
) -> None:
    """Rows whose keys the table does not hold (the caller holds the partner lock)."""
    if conn.dialect.name == "postgresql":
        _copy(conn, resource.table.name, _row_columns(resource),
              _rows(resource, partner_id, records, now))  # fmt: skip
    else:
        upsert(conn, resource, partner_id, records, now)


def upsert(
    conn: Connection, resource: Resource, partner_id: str, records: list[Record], now: datetime
) -> None:
    """INSERT … ON CONFLICT / ON DUPLICATE KEY UPDATE: changed or restored rows (or new ones)."""
    columns = _row_columns(resource)
    mutable = [c for c in columns if c not in ("partner_id", "id", "first_seen_at")]
    mark = _placeholder(conn)
    marks = [f"CAST({mark} AS jsonb)" if c == "raw" and conn.dialect.name == "postgresql"
             else mark for c in columns]  # fmt: skip
    sql = f"INSERT INTO {resource.table.name} ({', '.join(columns)}) VALUES ({', '.join(marks)})"
    if conn.dialect.name in ("mysql", "mariadb"):
        sql += " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in mutable)
    else:
        sql += " ON CONFLICT (partner_id, id) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in mutable
        )
    rows = _rows(resource, partner_id, records, _timestamp(conn, now))
    for chunk in batched(rows):
        conn.exec_driver_sql(sql, chunk)
        pause_point("after_first_batch")


def soft_delete(
    conn: Connection, resource: Resource, partner_id: str, keys: list[int], now: datetime
) -> None:
    table = resource.table
    statement = (
        sa.update(table)
        .where(
            table.c.partner_id == partner_id,
            table.c.id.in_(sa.bindparam("keys", expanding=True)),
        )
        .values(deleted_at=now, updated_at=now)
    )
    for chunk in batched(keys):
        conn.execute(statement, {"keys": chunk})


AUDIT_COLUMNS = ("run_id", "partner_id", "action", "old_values", "new_values", "changed_at")


def insert_audit(conn: Connection, resource: Resource, rows: Iterable[tuple[Any, ...]]) -> None:
    """Audit rows as (run_id, partner_id, action, old JSON text, new JSON text, changed_at, key)."""
    columns = [*AUDIT_COLUMNS, resource.audit_key]
    if conn.dialect.name == "postgresql":
        _copy(conn, resource.audit.name, columns, rows)
        return
    mark = _placeholder(conn)
    sql = (
        f"INSERT INTO {resource.audit.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    for chunk in batched(rows):
        conn.exec_driver_sql(sql, chunk)


def _copy(
    conn: Connection, table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """PostgreSQL COPY FROM STDIN: one statement for any number of rows."""
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with _DriverCursor(conn, statement) as (cursor, sql), cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)
    pause_point("after_first_batch")


def audit_timestamp(conn: Connection, now: datetime) -> Any:
    return _timestamp(conn, now)
