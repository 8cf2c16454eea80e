"""Apply a fetched snapshot to a resource's table: read, diff, write, audit in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from sync.models import Record
from sync.reconcile import Plan, check_delete_fraction, plan_changes
from sync.resources import Resource
from sync.store import bulk
from sync.store.bulk import BATCH_SIZE, batched
from sync.store.engine import SQLITE_BEGIN, translate_errors
from sync.store.runs import finish_run

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
            stored = bulk.read_stored(conn, resource, partner_id)
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
                snapshot_hash=snapshot_hash,
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


def _write(
    conn: Connection,
    resource: Resource,
    partner_id: str,
    plan: Plan,
    run_id: int,
    now: datetime,
) -> None:
    touched = [r.key for r in plan.updates] + [r.key for r in plan.restores] + plan.deletes
    old = bulk.read_documents(conn, resource, partner_id, touched) if touched else {}
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
    log.debug(
        "%s: %d inserted, %d updated, %d deleted, %d restored, %d unchanged",
        resource.name,
        len(plan.inserts),
        len(plan.updates),
        len(plan.deletes),
        len(plan.restores),
        plan.unchanged,
    )
