"""Work shared by replicas: each (list, partner) is due at a time kept in sync_state, and the
process that claims it first, with an atomic conditional UPDATE, syncs it; the others move on
without a request. A claim sets the next due time, so a process that dies after claiming only
delays that list by one interval. All times are the database's."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.schema import sync_state
from sync.store.clock import db_now
from sync.store.engine import operation, translate_errors
from sync.store.upsert import insert_missing

Key = tuple[str, str]  # (resource, partner_id)


def due(engine: Engine, keys: Iterable[Key]) -> list[Key]:
    """The keys among `keys` that are due now, most overdue first (never synced: first)."""
    wanted = list(keys)
    if not wanted:
        return []
    state = sync_state.c
    with translate_errors("reading sync_state"), engine.connect() as conn:
        now = db_now(conn)
        known = {
            (row.resource, row.partner_id): row.next_due_at
            for row in conn.execute(
                sa.select(state.resource, state.partner_id, state.next_due_at).where(
                    sa.tuple_(state.resource, state.partner_id).in_(wanted)
                )
            )
        }
    pending = [(known.get(key), key) for key in wanted if key not in known or known[key] is None
               or known[key] <= now]  # fmt: skip
    return [key for at, key in sorted(pending, key=lambda p: (p[0] is not None, p[0] or now))]


def claim(
    engine: Engine, key: Key, interval_seconds: float, owner: str, *, force: bool = False
) -> bool:
    """Take `key` until it is next due, `interval_seconds` from now; False if another process
    claimed it first (unless `force`: `once` always runs, and pushes the due time on)."""
    resource, partner_id = key
    state = sync_state.c
    with operation(engine, "claim", "claiming work in sync_state"), engine.begin() as conn:
        now = db_now(conn)
        insert_missing(
            conn, sync_state, {"resource": resource, "partner_id": partner_id, "last_write_at": now}
        )
        statement = sa.update(sync_state).where(
            state.resource == resource, state.partner_id == partner_id
        )
        if not force:
            statement = statement.where(
                sa.or_(state.next_due_at.is_(None), state.next_due_at <= now)
            )
        claimed = conn.execute(
            statement.values(
                next_due_at=now + timedelta(seconds=interval_seconds),
                claimed_by=owner[:128],
                claimed_at=now,
            )
        )
        return bool(claimed.rowcount)


def schedule(engine: Engine) -> dict[Key, tuple[datetime | None, str | None, datetime]]:
    """Every key's next due time and last claimant, with the database's now (for `status`)."""
    state = sync_state.c
    with translate_errors("reading sync_state"), engine.connect() as conn:
        now = db_now(conn)
        return {
            (row.resource, row.partner_id): (row.next_due_at, row.claimed_by, now)
            for row in conn.execute(
                sa.select(state.resource, state.partner_id, state.next_due_at, state.claimed_by)
            )
        }
