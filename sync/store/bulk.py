"""Bulk reads and writes of one list for one cycle, on the caller's connection and transaction.

Everything goes through SQLAlchemy's Connection (exec_driver_sql), so its events fire as for any
statement (statement counters, tracing instrumentations). Values go to the driver as plain
tuples with the JSON already canonical text; writes are executemany of a native upsert
(sqlite3 loops in C, PyMySQL folds a batch into one multi-row INSERT, psycopg pipelines it);
bulk reads iterate the driver's cursor, since at 100,000 rows a Row object per row costs more
than the query.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.models import Record
from sync.pause_points import pause_point
from sync.reconcile import Stored
from sync.resources import Resource
from sync.schema import UTCDateTime

# Rows per statement (and per IN-list): far below every dialect's parameter limit.
BATCH_SIZE = 1000
T = TypeVar("T")


def batched(items: Iterable[T], size: int = BATCH_SIZE) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class ListSql:
    """SQL text for one list on one connection: quoted names, placeholders, JSON casts, and the
    one UTC formatter (sync.schema.UTCDateTime's own, so raw and ORM writes store the same)."""

    def __init__(self, conn: Connection, resource: Resource) -> None:
        dialect = conn.dialect
        quote = dialect.identifier_preparer.quote
        self.conn, self.resource, self.quote = conn, resource, quote
        self.dialect = dialect.name
        self.mark = "?" if self.dialect == "sqlite" else "%s"
        # PostgreSQL takes JSON as text and casts it to jsonb; the others store the text.
        self.json_mark = "CAST(%s AS jsonb)" if self.dialect == "postgresql" else self.mark
        self.table, self.audit = quote(resource.table.name), quote(resource.audit.name)
        self.scope = ["site_id"] if resource.site_scoped else []
        self.key_columns = ["partner_id", *self.scope, "id"]
        stamp = UTCDateTime().bind_processor(dialect)
        self.stamp: Callable[[datetime | None], Any] = stamp or (lambda value: value)
        self.time_columns = [c.kind == "time" for c in resource.columns]

    def names(self, columns: Sequence[str]) -> str:
        return ", ".join(self.quote(c) for c in columns)

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)

    def where_idents(self, count: int) -> str:
        """`id IN (…)`, or `(site_id, id) IN ((…), …)` for a per-site list."""
        if not self.scope:
            return f"id IN ({self.marks(count)})"
        pairs = ", ".join([f"({self.mark}, {self.mark})"] * count)
        return f"(site_id, id) IN ({pairs})"

    def typed(self, record: Record) -> list[Any]:
        return [
            self.stamp(value) if is_time else value
            for value, is_time in zip(record.typed, self.time_columns, strict=True)
        ]


def _flat(idents: Sequence[Hashable]) -> list[Any]:
    """Idents as statement parameters: ids, or site and id after each other."""
    flat: list[Any] = []
    for ident in idents:
        flat.extend(ident if isinstance(ident, tuple) else (ident,))
    return flat


def _cursor_rows(conn: Connection, statement: str, parameters: Sequence[Any]) -> Iterator[Any]:
    result = conn.exec_driver_sql(statement, tuple(parameters))
    try:
        yield from cast(Iterable[Any], result.cursor)  # the driver's tuples, no Row objects
    finally:
        result.close()


def _site_filters(sql: ListSql, sites: Sequence[int] | None) -> Iterator[tuple[str, list[Any]]]:
    """The WHERE tail and parameters for all of a partner's rows, or those of `sites`."""
    if sites is None:
        yield "", []
        return
    for chunk in batched(sites):
        yield f" AND site_id IN ({sql.marks(len(chunk))})", list(chunk)


def read_stored(
    conn: Connection, resource: Resource, partner_id: str, sites: Sequence[int] | None = None
) -> Stored:
    """Each row's content hash and whether it is live, of one partner (and of `sites`)."""
    sql = ListSql(conn, resource)
    live: dict[Hashable, str] = {}
    deleted: set[Hashable] = set()
    columns = sql.names([*sql.scope, "id", "raw_hash"])
    for where, parameters in _site_filters(sql, sites):
        statement = (
            f"SELECT {columns}, deleted_at IS NULL FROM {sql.table} "
            f"WHERE partner_id = {sql.mark}{where}"
        )
        rows = _cursor_rows(conn, statement, [partner_id, *parameters])
        if sql.scope:
            for site, key, digest, alive in rows:
                if alive:
                    live[(site, key)] = digest
                else:
                    deleted.add((site, key))
        else:
            for key, digest, alive in rows:
                if alive:
                    live[key] = digest
                else:
                    deleted.add(key)
    return Stored(live, deleted)


def read_live_contents(
    conn: Connection, resource: Resource, partner_id: str, sites: Sequence[int] | None = None
) -> dict[Hashable, tuple[str, tuple[Any, ...]]]:
    """Live rows' ident → (raw as the database spells it, typed column values through
    SQLAlchemy's types). For a full compare only: it reads every document, where a cycle reads
    hashes; the text is left undecoded, since it mostly equals the canonical text as it is."""
    table = resource.table
    scope = [table.c.site_id] if resource.site_scoped else []
    typed = [table.c[name] for name in resource.typed_columns]
    contents: dict[Hashable, tuple[str, tuple[Any, ...]]] = {}
    raw = sa.cast(table.c.raw, sa.Text)
    base = sa.select(*scope, table.c.id, raw, *typed).where(
        table.c.partner_id == partner_id, table.c.deleted_at.is_(None)
    )
    chunks: Iterable[list[int] | None] = [None] if sites is None else batched(sites)
    for chunk in chunks:
        statement = base if chunk is None else base.where(table.c.site_id.in_(chunk))
        for row in conn.execute(statement):
            if scope:
                contents[(row[0], row[1])] = (row[2], tuple(row[3:]))
            else:
                contents[row[0]] = (row[1], tuple(row[2:]))
    return contents


def read_documents(
    conn: Connection, resource: Resource, partner_id: str, idents: Sequence[Hashable]
) -> dict[Hashable, str]:
    """Ident → stored JSON text of the rows about to change (the audit's old_values)."""
    sql = ListSql(conn, resource)
    raw = "raw::text" if sql.dialect == "postgresql" else "raw"
    documents: dict[Hashable, str] = {}
    for chunk in batched(idents):
        statement = (
            f"SELECT {sql.names([*sql.scope, 'id'])}, {raw} FROM {sql.table} "
            f"WHERE partner_id = {sql.mark} AND {sql.where_idents(len(chunk))}"
        )
        for *ident, text in _cursor_rows(conn, statement, [partner_id, *_flat(chunk)]):
            key = tuple(ident) if sql.scope else ident[0]
            documents[key] = text if isinstance(text, str) else text.decode("utf-8")
    return documents


def upsert(
    conn: Connection, resource: Resource, partner_id: str, records: list[Record], now: datetime
) -> None:
    """INSERT … ON CONFLICT / ON DUPLICATE KEY UPDATE: new, changed or restored rows."""
    sql = ListSql(conn, resource)
    columns = [*sql.key_columns, *resource.typed_columns, "raw", "raw_hash", "first_seen_at",
               "updated_at", "deleted_at"]  # fmt: skip
    mutable = [c for c in columns if c not in (*sql.key_columns, "first_seen_at")]
    marks = [sql.json_mark if c == "raw" else sql.mark for c in columns]
    statement = f"INSERT INTO {sql.table} ({sql.names(columns)}) VALUES ({', '.join(marks)})"
    if sql.dialect in ("mysql", "mariadb"):
        statement += " ON DUPLICATE KEY UPDATE " + ", ".join(
            f"{sql.quote(c)} = VALUES({sql.quote(c)})" for c in mutable
        )
    else:
        statement += f" ON CONFLICT ({sql.names(sql.key_columns)}) DO UPDATE SET " + ", ".join(
            f"{sql.quote(c)} = excluded.{sql.quote(c)}" for c in mutable
        )
    stamp = sql.stamp(now)
    rows = (
        (partner_id, *((r.site_id,) if sql.scope else ()), r.key, *sql.typed(r),
         r.text, r.digest, stamp, stamp, None)
        for r in records
    )  # fmt: skip
    for chunk in batched(rows):
        _execute_rows(conn, statement, chunk)
        pause_point("after_first_batch")


def soft_delete(
    conn: Connection,
    resource: Resource,
    partner_id: str,
    idents: Sequence[Hashable],
    now: datetime,
) -> None:
    sql = ListSql(conn, resource)
    stamp = sql.stamp(now)
    for chunk in batched(idents):
        conn.exec_driver_sql(
            f"UPDATE {sql.table} SET deleted_at = {sql.mark}, updated_at = {sql.mark} "
            f"WHERE partner_id = {sql.mark} AND {sql.where_idents(len(chunk))}",
            (stamp, stamp, partner_id, *_flat(chunk)),
        )


def insert_audit(
    conn: Connection, resource: Resource, rows: Iterable[tuple[Any, ...]], now: datetime
) -> None:
    """Audit rows as (run_id, partner_id, [site_id,] key, action, old JSON text, new JSON text,
    changed_fields JSON text); changed_at is `now`."""
    sql = ListSql(conn, resource)
    columns = ["run_id", "partner_id", *sql.scope, resource.audit_key, "action",
               "old_values", "new_values", "changed_fields", "changed_at"]  # fmt: skip
    json_columns = ("old_values", "new_values", "changed_fields")
    marks = [sql.json_mark if c in json_columns else sql.mark for c in columns]
    statement = f"INSERT INTO {sql.audit} ({sql.names(columns)}) VALUES ({', '.join(marks)})"
    stamp = sql.stamp(now)
    for chunk in batched((*row, stamp) for row in rows):
        _execute_rows(conn, statement, chunk)


def _execute_rows(conn: Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """One INSERT … VALUES (…) for many rows.

    sqlite3 runs executemany in C and PyMySQL folds it into one multi-row INSERT; psycopg sends
    one execution per row, which costs PostgreSQL several times more than one statement with
    every row in its VALUES (1,000 rows of 12 parameters stay far below its 65,535).
    """
    if conn.dialect.name != "postgresql" or len(rows) == 1:
        conn.exec_driver_sql(statement, rows)
        return
    head, values, tail = _split_values(statement)
    conn.exec_driver_sql(
        f"{head}{', '.join([values] * len(rows))}{tail}",
        tuple(value for row in rows for value in row),
    )


def _split_values(statement: str) -> tuple[str, str, str]:
    """An `INSERT … VALUES (…) …` statement as (up to VALUES, the row, what follows)."""
    head, _, rest = statement.partition(" VALUES ")
    depth = 0
    for index, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return f"{head} VALUES ", rest[: index + 1], rest[index + 1 :]
    raise ValueError("not an INSERT … VALUES (…) statement")  # pragma: no cover
