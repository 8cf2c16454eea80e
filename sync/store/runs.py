"""The sync_runs table: one row per cycle, from 'running' to success, failed or skipped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.resources import ACTIVE_SITE_STATUSES
from sync.schema import ERROR_TEXT_LENGTH, sync_runs
from sync.store.clock import as_utc
from sync.store.engine import operation, translate_errors

ABANDONED_ERROR = "abandoned: the process running this cycle stopped before it finished"
COUNT_COLUMNS = ("fetched", "inserted", "updated", "deleted", "restored", "unchanged")


def start_run(engine: Engine, *, resource: str, partner_id: str, now: datetime) -> int:
    """Insert and commit a 'running' row, so a killed process leaves a trace; returns its id."""
    with operation(engine, "start_run", "recording the start of the run"), engine.begin() as conn:
        result = conn.execute(
            sa.insert(sync_runs).values(
                resource=resource, partner_id=partner_id, started_at=now, status="running"
            )
        )
        return _new_id(result)


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    status: str,
    now: datetime,
    partner_id: str | None = None,
    counts: Mapping[str, int] | None = None,
    error: str | None = None,
    snapshot_hash: str | None = None,
    only_if_running: bool = False,
) -> bool:
    """Close the run row inside the caller's transaction; False if it was not `running`.

    A failure is recorded with `only_if_running`, so that it can never rewrite a run that
    another path already closed (a committed success above all).
    """
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "error": _clip(error),
        "snapshot_hash": snapshot_hash,
    }
    if partner_id is not None:
        values["partner_id"] = partner_id
    if counts:
        values.update({k: int(counts[k]) for k in COUNT_COLUMNS if k in counts})
    statement = sa.update(sync_runs).where(sync_runs.c.id == run_id)
    if only_if_running:
        statement = statement.where(sync_runs.c.status == "running")
    return bool(conn.execute(statement.values(**values)).rowcount)


def finish_run_now(engine: Engine, run_id: int, **kwargs: Any) -> bool:
    """finish_run in a transaction of its own (failures, skips)."""
    with operation(engine, "finish_run", "recording the end of the run"), engine.begin() as conn:
        return finish_run(conn, run_id, **kwargs)


def record_run(
    engine: Engine,
    *,
    resource: str,
    partner_id: str,
    status: str,
    started_at: datetime,
    now: datetime,
    error: str | None = None,
) -> int:
    """Insert a run that is already over (skipped, or failed before it could start)."""
    with operation(engine, "record_run", "recording the run"), engine.begin() as conn:
        result = conn.execute(
            sa.insert(sync_runs).values(
                resource=resource,
                partner_id=partner_id,
                started_at=started_at,
                finished_at=now,
                status=status,
                error=_clip(error),
            )
        )
        return _new_id(result)


def fail_abandoned_runs(engine: Engine, *, resource: str, partner_id: str, now: datetime) -> int:
    """Mark 'running' rows of this partner and resource as failed.

    Only called while holding the partner lock: no live process can own such a row. The rows
    are found with a plain read first and updated by id: an UPDATE by a WHERE over the index
    would take gap locks on MariaDB, which deadlock with other lists inserting their runs.
    """
    with operation(engine, "fail_abandoned_runs", "closing abandoned runs"), engine.begin() as conn:
        abandoned = list(
            conn.execute(
                sa.select(sync_runs.c.id).where(
                    sync_runs.c.resource == resource,
                    sync_runs.c.partner_id == partner_id,
                    sync_runs.c.status == "running",
                )
            ).scalars()
        )
        if not abandoned:
            return 0
        result = conn.execute(
            sa.update(sync_runs)
            .where(sync_runs.c.id.in_(abandoned), sync_runs.c.status == "running")
            .values(status="failed", finished_at=now, error=ABANDONED_ERROR)
        )
        return int(result.rowcount or 0)


def unchanged_snapshot(
    engine: Engine,
    table: sa.Table,
    *,
    resource: str,
    partner_id: str,
    snapshot_hash: str,
    sites: Sequence[int] | None = None,
) -> int | None:
    """The row count if the last success applied a body with this hash and the table still
    holds that many live rows; None when the cycle must compare row by row.

    Called under the partner lock, so no other cycle can have written since that success.
    The row count catches a table emptied or pruned by hand.
    """
    with operation(engine, "unchanged_snapshot", "reading sync_runs"), engine.connect() as conn:
        last = conn.execute(
            sa.select(sync_runs.c.snapshot_hash, sync_runs.c.fetched)
            .where(
                sync_runs.c.resource == resource,
                sync_runs.c.partner_id == partner_id,
                sync_runs.c.status == "success",
            )
            .order_by(sync_runs.c.id.desc())
            .limit(1)
        ).first()
        if last is None or last.snapshot_hash != snapshot_hash:
            return None
        where = [table.c.partner_id == partner_id, table.c.deleted_at.is_(None)]
        if sites is not None:
            # Rows of sites no longer fetched are kept as they were, and not counted.
            where.append(table.c.site_id.in_(sites) if sites else sa.false())
        live = conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one()
    return int(live) if live == last.fetched else None


# Runs that changed nothing and failed at nothing: the bulk of a long history.
PRUNABLE_STATUSES = ("success", "skipped", "interrupted")
PRUNE_BATCH = 500


def prune_runs(engine: Engine, *, older_than: datetime, max_batches: int = 20) -> int:
    """Delete runs that changed nothing (or were skipped or interrupted) started before
    `older_than`, a batch per transaction; returns how many. Runs with audit rows (every one
    that changed something) and failed runs are kept; the audit trail is never pruned.
    """
    changed = sync_runs.c.inserted + sync_runs.c.updated + sync_runs.c.deleted
    pick = (
        sa.select(sync_runs.c.id)
        .where(
            sync_runs.c.status.in_(PRUNABLE_STATUSES),
            sync_runs.c.started_at < older_than,
            changed + sync_runs.c.restored == 0,
        )
        .order_by(sync_runs.c.id)
        .limit(PRUNE_BATCH)
    )
    removed = 0
    for _ in range(max_batches):
        with operation(engine, "prune_runs", "pruning old sync_runs"), engine.begin() as conn:
            # Two statements: MariaDB allows no LIMIT in an IN subquery.
            ids = list(conn.execute(pick).scalars())
            if ids:
                conn.execute(sa.delete(sync_runs).where(sync_runs.c.id.in_(ids)))
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            break
    return removed


def recent_runs(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    """The newest runs first."""
    with translate_errors("reading sync_runs"), engine.connect() as conn:
        rows = conn.execute(
            sa.select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit)
        ).mappings()
        return [dict(row) for row in rows]


def last_success(engine: Engine, resource: str) -> datetime | None:
    with translate_errors("reading sync_runs"), engine.connect() as conn:
        value = conn.execute(
            sa.select(sa.func.max(sync_runs.c.finished_at)).where(
                sync_runs.c.resource == resource, sync_runs.c.status == "success"
            )
        ).scalar()
    return value if isinstance(value, datetime) else None


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return int(key[0])


def _clip(error: str | None) -> str | None:
    if error is None:
        return None
    return error if len(error) <= ERROR_TEXT_LENGTH else error[: ERROR_TEXT_LENGTH - 1] + "…"


def active_site_ids(engine: Engine, partner_id: str) -> list[int]:
    """The partner's live sites whose per-site lists are fetched (Open or Suspended)."""
    sites = sa.table(
        "sites",
        sa.column("partner_id"),
        sa.column("id"),
        sa.column("status"),
        sa.column("deleted_at"),
    )
    with operation(engine, "active_site_ids", "reading sites"), engine.connect() as conn:
        return [
            int(site)
            for site in conn.execute(
                sa.select(sites.c.id)
                .where(
                    sites.c.partner_id == partner_id,
                    sites.c.deleted_at.is_(None),
                    sites.c.status.in_(ACTIVE_SITE_STATUSES),
                )
                .order_by(sites.c.id)
            ).scalars()
        ]


def last_successes(
    engine: Engine, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], datetime]:
    """When each (resource, partner) of `keys` last synced successfully, by any process on this
    database (run times are the processes' own UTC clocks)."""
    runs = sync_runs.c
    wanted = set(keys)
    if not wanted:
        return {}
    with translate_errors("reading sync_runs"), engine.connect() as conn:
        rows = conn.execute(
            sa.select(runs.resource, runs.partner_id, sa.func.max(runs.finished_at))
            .where(
                runs.status == "success",
                runs.resource.in_(sorted({resource for resource, _ in wanted})),
                runs.partner_id.in_(sorted({partner for _, partner in wanted})),
            )
            .group_by(runs.resource, runs.partner_id)
        )
        return {
            (resource, partner): as_utc(at)
            for resource, partner, at in rows
            if (resource, partner) in wanted and at is not None
        }
