"""Apply a fetched snapshot to a resource's table: read, diff, write, audit in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.models import Record, canonical_json
from sync.pause_points import pause_point
from sync.reconcile import Plan, check_delete_fraction, plan_changes
from sync.resources import Resource
from sync.schema import sync_state
from sync.store import bulk
from sync.store.bulk import BATCH_SIZE, batched
from sync.store.engine import SQLITE_BEGIN, translate_errors
from sync.store.runs import finish_run
from sync.store.upsert import insert_missing

log = logging.getLogger(__name__)

__all__ = ["BATCH_SIZE", "apply_snapshot", "batched", "counts_of"]


def apply_snapshot(
    engine: Engine,
    resource: Resource,
    *,
    run_id: int,
    partner_id: str,
    records: list[Record],
    now: datetime,
    max_delete_fraction: float,
    snapshot_hash: str | None = None,
    full_compare: bool = False,
) -> Plan:
    """Bring `resource.table` in line with `records`, audit each change, close the run as success.

    All of it commits together or not at all. A cycle with no change writes only the run row.
    A `full_compare` also reads every live document and rewrites rows whose content no longer
    matches their hash (edited by hand, restored from a backup, written by an older version).

    Raises:
        SafetyLimitError: too many deletes; nothing written.
        StoreError: the database failed; nothing written.
    """
    with translate_errors(f"writing {resource.name}"), engine.connect() as conn:
        conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            take_fence(conn, resource.name, partner_id, now=now)
            stored = bulk.read_stored(conn, resource, partner_id)
            contents = bulk.read_live_contents(conn, resource, partner_id) if full_compare else {}

            def still_holds(record: Record) -> bool:
                held = contents.get(record.key)
                # Compared as values: a database may respell a document (jsonb drops -0.0's
                # sign, reorders keys) without changing what it says.
                return held is not None and held == (record.raw, resource.typed_values(record))

            plan = plan_changes(stored, records, still_holds=still_holds if full_compare else None)
            check_delete_fraction(plan, max_delete_fraction)
            pause_point("after_plan")
            if plan.changed:
                drifted = {
                    r.key: contents[r.key] for r in plan.updates if stored.live[r.key] == r.digest
                }
                if drifted:
                    log.warning(
                        "%s: %d row(s) no longer held what their hash says (edited by hand?); "
                        "rewriting them",
                        resource.name,
                        len(drifted),
                    )
                _write(conn, resource, partner_id, plan, run_id, now, drifted)
            finish_run(
                conn,
                run_id,
                status="success",
                now=now,
                partner_id=partner_id,
                counts=counts_of(plan, fetched=len(records)),
                snapshot_hash=snapshot_hash,
            )
    return plan


def take_fence(conn: Connection, resource: str, partner_id: str, *, now: datetime) -> None:
    """The first statements of a write transaction: lock this resource and partner's
    sync_state row (created on first use). The row lock, held until commit or rollback, makes
    a second writer wait here, before it reads anything; it then reads what the first wrote.

    The session lock (store.locks) keeps a second cycle from even fetching, but it lives on
    another connection, which a failover or an idle timeout can take away mid-cycle; this
    fence lives in the write transaction itself. On SQLite, BEGIN IMMEDIATE already is one.
    Nothing is written here, so a cycle without changes still writes only its run row.
    """
    key = {"resource": resource, "partner_id": partner_id}
    insert_missing(conn, sync_state, key | {"last_write_at": now})
    if conn.dialect.name != "sqlite":
        conn.execute(
            sa.select(sync_state.c.resource)
            .where(sync_state.c.resource == resource, sync_state.c.partner_id == partner_id)
            .with_for_update()
        )


def counts_of(plan: Plan, *, fetched: int) -> dict[str, int]:
    return {
        "fetched": fetched,
        "inserted": len(plan.inserts),
        "updated": len(plan.updates),
        "deleted": len(plan.deletes),
        "restored": len(plan.restores),
        "unchanged": plan.unchanged,
    }


def _write(
    conn: Connection,
    resource: Resource,
    partner_id: str,
    plan: Plan,
    run_id: int,
    now: datetime,
    drifted: dict[int, tuple[Any, tuple[Any, ...]]],
) -> None:
    touched = [r.key for r in plan.updates] + [r.key for r in plan.restores] + plan.deletes
    old = bulk.read_documents(conn, resource, partner_id, touched) if touched else {}
    for key, (raw, typed) in drifted.items():
        # What the row showed: its document, with any typed column edited apart from it.
        old[key] = canonical_json(resource.shown(raw, typed))
    if plan.inserts:
        bulk.insert_new(conn, resource, partner_id, plan.inserts, now)
    if plan.updates or plan.restores:
        bulk.upsert(conn, resource, partner_id, [*plan.updates, *plan.restores], now)
    if plan.deletes:
        bulk.soft_delete(conn, resource, partner_id, plan.deletes, now)

    stamp = bulk.audit_timestamp(conn, now)

    def audit_rows() -> Iterator[tuple[Any, ...]]:
        # (run_id, partner_id, action, old_values, new_values, changed_at, record key)
        for record in plan.inserts:
            yield run_id, partner_id, "insert", None, record.text, stamp, record.key
        for record in plan.updates:
            yield run_id, partner_id, "update", old[record.key], record.text, stamp, record.key
        for record in plan.restores:
            yield (
                run_id,
                partner_id,
                "restore",
                old[record.key],
                record.text,
                stamp,
                record.key,
            )
        for key in plan.deletes:
            yield run_id, partner_id, "delete", old[key], None, stamp, key

    bulk.insert_audit(conn, resource, audit_rows())
    conn.execute(
        sa.update(sync_state)
        .where(sync_state.c.resource == resource.name, sync_state.c.partner_id == partner_id)
        .values(last_write_at=now, last_run_id=run_id)
    )
    log.debug(
        "%s: %d inserted, %d updated, %d deleted, %d restored, %d unchanged",
        resource.name,
        len(plan.inserts),
        len(plan.updates),
        len(plan.deletes),
        len(plan.restores),
        plan.unchanged,
    )
