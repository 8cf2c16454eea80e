"""Apply a fetched snapshot to a resource's table: read, diff, write, audit in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from sync.models import Record
from sync.reconcile import Plan, StoredRow, check_delete_fraction, plan_changes
from sync.resources import Resource
from sync.store.engine import SQLITE_BEGIN, translate_errors
from sync.store.runs import finish_run

log = logging.getLogger(__name__)

# Rows per IN-list: far below every dialect's parameter limit, few enough round trips.
BATCH_SIZE = 1000
T = TypeVar("T")


def batched(items: Sequence[T], size: int = BATCH_SIZE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def apply_snapshot(
    engine: Engine,
    resource: Resource,
    *,
    run_id: int,
    partner_id: str,
    records: list[Record],
    now: datetime,
    max_delete_fraction: float,
) -> Plan:
    """Bring `resource.table` in line with `records`, audit each change, close the run as success.

    All of it commits together or not at all. A cycle with no change writes only the run row.

    Raises:
        SafetyLimitError: too many deletes; nothing written.
        StoreError: the database failed; nothing written.
    """
    with translate_errors(f"writing {resource.name}"), engine.connect() as conn:
        conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            stored = _read_stored(conn, resource, partner_id)
            plan = plan_changes(stored, records)
            check_delete_fraction(plan, max_delete_fraction)
            if plan.changed:
                _write(conn, resource, partner_id, plan, run_id, now)
            finish_run(
                conn,
                run_id,
                status="success",
                now=now,
                partner_id=partner_id,
                counts=counts_of(plan, fetched=len(records)),
            )
    return plan


def counts_of(plan: Plan, *, fetched: int) -> dict[str, int]:
    return {
        "fetched": fetched,
        "inserted": len(plan.inserts),
        "updated": len(plan.updates),
        "deleted": len(plan.deletes),
        "restored": len(plan.restores),
        "unchanged": plan.unchanged,
    }


def _read_stored(conn: Connection, resource: Resource, partner_id: str) -> dict[int, StoredRow]:
    table = resource.table
    rows = conn.execute(
        sa.select(table.c.id, table.c.raw_hash, table.c.deleted_at.is_(None)).where(
            table.c.partner_id == partner_id
        )
    )
    return {key: StoredRow(digest, bool(live)) for key, digest, live in rows}


def _read_raw(
    conn: Connection, resource: Resource, partner_id: str, keys: Sequence[int]
) -> dict[int, Any]:
    """Stored documents of the rows about to change, for the audit's old_values."""
    table = resource.table
    query = sa.select(table.c.id, table.c.raw).where(
        table.c.partner_id == partner_id, table.c.id.in_(sa.bindparam("keys", expanding=True))
    )
    old: dict[int, Any] = {}
    for chunk in batched(keys):
        for key, raw in conn.execute(query, {"keys": list(chunk)}):
            old[key] = raw
    return old


def _upsert(conn: Connection, table: sa.Table) -> sa.Insert:
    """INSERT that turns into an UPDATE of the mutable columns when the key exists."""
    mutable = [c.name for c in table.columns if not c.primary_key and c.name != "first_seen_at"]
    dialect = conn.dialect.name
    if dialect == "postgresql" or dialect == "sqlite":
        stmt = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key.columns],
            set_={name: stmt.excluded[name] for name in mutable},
        )
    if dialect in ("mysql", "mariadb"):
        my_stmt = mysql.insert(table)
        return my_stmt.on_duplicate_key_update({name: my_stmt.inserted[name] for name in mutable})
    raise NotImplementedError(f"no upsert for dialect {dialect}")


def _write(
    conn: Connection,
    resource: Resource,
    partner_id: str,
    plan: Plan,
    run_id: int,
    now: datetime,
) -> None:
    table, audit = resource.table, resource.audit
    touched = [r.key for r in plan.updates] + [r.key for r in plan.restores] + plan.deletes
    old = _read_raw(conn, resource, partner_id, touched) if touched else {}

    upserts = [*plan.inserts, *plan.updates, *plan.restores]
    if upserts:
        rows = [
            {
                "partner_id": partner_id,
                "id": record.key,
                **resource.columns(record),
                "raw": record.raw,
                "raw_hash": record.digest,
                "first_seen_at": now,
                "updated_at": now,
                "deleted_at": None,
            }
            for record in upserts
        ]
        stmt = _upsert(conn, table)
        for chunk in batched(rows):
            conn.execute(stmt, list(chunk))
    if plan.deletes:
        soft_delete = (
            sa.update(table)
            .where(
                table.c.partner_id == partner_id,
                table.c.id.in_(sa.bindparam("keys", expanding=True)),
            )
            .values(deleted_at=now, updated_at=now)
        )
        for keys in batched(plan.deletes):
            conn.execute(soft_delete, {"keys": list(keys)})

    def audit_rows() -> Iterable[dict[str, Any]]:
        key = resource.audit_key
        base = {"run_id": run_id, "partner_id": partner_id, "changed_at": now}
        for record in plan.inserts:
            yield {
                **base,
                key: record.key,
                "action": "insert",
                "old_values": None,
                "new_values": record.raw,
            }
        for record in plan.updates:
            yield {
                **base,
                key: record.key,
                "action": "update",
                "old_values": old.get(record.key),
                "new_values": record.raw,
            }
        for record in plan.restores:
            yield {
                **base,
                key: record.key,
                "action": "restore",
                "old_values": old.get(record.key),
                "new_values": record.raw,
            }
        for deleted in plan.deletes:
            yield {
                **base,
                key: deleted,
                "action": "delete",
                "old_values": old.get(deleted),
                "new_values": None,
            }

    entries = list(audit_rows())
    for chunk in batched(entries):
        conn.execute(sa.insert(audit), list(chunk))
    log.debug(
        "%s: %d inserted, %d updated, %d deleted, %d restored, %d unchanged",
        resource.name,
        len(plan.inserts),
        len(plan.updates),
        len(plan.deletes),
        len(plan.restores),
        plan.unchanged,
    )
