"""Apply a fetched snapshot to a list's table: fence, read, diff, write and audit in one
transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.models import Record, canonical_json
from sync.parsing import typed_values
from sync.pause_points import pause_point
from sync.reconcile import Plan, changed_fields, check_delete_fraction, plan_changes
from sync.resources import Resource
from sync.schema import sync_state
from sync.store import bulk
from sync.store.bulk import BATCH_SIZE, batched
from sync.store.engine import SQLITE_BEGIN, operation
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
    sites: Sequence[int] | None = None,
    status: str = "success",
    error: str | None = None,
) -> Plan:
    """Bring the list's table in line with `records`, audit each change, close the run.

    All of it commits together or not at all. A cycle with no change writes only the run row.
    For a per-site list, only the rows of `sites` (those fetched) are compared; the others stay
    as they are. A `full_compare` also reads every live document and rewrites rows whose
    content no longer matches their hash (edited by hand, restored from a backup, written by an
    older version). The run is closed as `status` (success, or partial with `error`).

    Raises:
        SafetyLimitError: too many deletes; nothing written.
        StoreError: the database failed; nothing written.
    """
    with operation(engine, "apply_snapshot", f"writing {resource.name}"), engine.connect() as conn:
        conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            take_fence(conn, resource.name, partner_id, now=now)
            stored = bulk.read_stored(conn, resource, partner_id, sites)
            contents = (
                bulk.read_live_contents(conn, resource, partner_id, sites) if full_compare else {}
            )

            def still_holds(record: Record) -> bool:
                held = contents.get(record.ident)
                if held is None or held[1] != record.typed:
                    return False
                # The text as written, or (jsonb respells documents: spaces, key order, -0.0's
                # sign) the same values.
                return held[0] == record.text or json.loads(held[0]) == record.raw

            plan = plan_changes(stored, records, still_holds=still_holds if full_compare else None)
            check_delete_fraction(plan, max_delete_fraction)
            pause_point("after_plan")
            if plan.changed:
                drifted = {
                    r.ident: contents[r.ident]
                    for r in plan.updates
                    if stored.live[r.ident] == r.digest
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
                status=status,
                now=now,
                partner_id=partner_id,
                counts=counts_of(plan, fetched=len(records)),
                snapshot_hash=snapshot_hash,
                error=error,
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
    drifted: dict[Hashable, tuple[str, tuple[Any, ...]]],
) -> None:
    touched = [r.ident for r in plan.updates] + [r.ident for r in plan.restores] + plan.deletes
    old = bulk.read_documents(conn, resource, partner_id, touched) if touched else {}
    for ident, (raw, typed) in drifted.items():
        # What the row showed: its document, with any typed column edited apart from it.
        old[ident] = canonical_json(_shown(resource, json.loads(raw), typed))
    changed = [*plan.inserts, *plan.updates, *plan.restores]
    if changed:
        bulk.upsert(conn, resource, partner_id, changed, now)
    if plan.deletes:
        bulk.soft_delete(conn, resource, partner_id, plan.deletes, now)
    bulk.insert_audit(conn, resource, _audit_rows(resource, partner_id, plan, run_id, old), now)
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


def _audit_rows(
    resource: Resource, partner_id: str, plan: Plan, run_id: int, old: dict[Hashable, str]
) -> Iterator[tuple[Any, ...]]:
    """(run_id, partner_id, [site_id,] key, action, old, new, changed_fields) per change."""
    site_scoped = resource.site_scoped

    def row(ident: Hashable, action: str, before: str | None, after: str | None,
            fields: str) -> tuple[Any, ...]:  # fmt: skip
        where = ident if site_scoped else (ident,)
        assert isinstance(where, tuple)
        return (run_id, partner_id, *where, action, before, after, fields)

    for record in plan.inserts:
        yield row(record.ident, "insert", None, record.text, orjson.dumps(record.fields).decode())
    for action, records in (("update", plan.updates), ("restore", plan.restores)):
        for record in records:
            before = old[record.ident]
            fields = changed_fields(json.loads(before), record.raw)
            yield row(record.ident, action, before, record.text, orjson.dumps(fields).decode())
    for ident in plan.deletes:
        before = old[ident]
        yield row(ident, "delete", before, None, orjson.dumps(sorted(json.loads(before))).decode())


def _shown(resource: Resource, raw: dict[str, Any], typed: tuple[Any, ...]) -> dict[str, Any]:
    """A row as a dashboard saw it: `raw`, with typed columns that disagree laid over it."""
    shown = dict(raw)
    derived = typed_values(raw, resource) or (None,) * len(typed)
    for field, value, expected in zip(resource.typed_fields, typed, derived, strict=True):
        if value != expected:
            shown[field] = value.isoformat() if isinstance(value, datetime) else value
    return shown
