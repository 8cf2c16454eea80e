"""The Partner API's rate budget, shared by every process on this database and every account.

A sliding window: one row per call in sync_rate_calls, counted under a row lock on the budget's
sync_rate_state row (SQLite: its write lock), so that no two processes can both take the last
slot. Never more than CALLS calls in any SECONDS-long window. Calls are also paced: at most a
tenth of the budget in any tenth of the window, so that a waiting crowd does not spend the whole
budget in one burst and then wait the rest of the window (every window stays about 90 % used
while work waits). After a 429, every process waits until its Retry-After has passed
(blocked_until). All times are the database's.

pyrate-limiter was considered: its PostgreSQL and SQLite buckets take the same kind of lock (an
exclusive table lock, then a count), but they create their tables at run time (a DML-only
account cannot), refuse a call on lock contention instead of queueing it (replicas would waste
their budget), know no MariaDB, and have no shared pause after a 429.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.errors import StoreError
from sync.schema import sync_rate_calls, sync_rate_state
from sync.store.clock import as_utc, now_column
from sync.store.engine import SQLITE_BEGIN, is_deadlock, operation
from sync.store.upsert import insert_missing

# Old rows are deleted once every this many calls a process takes.
_PRUNE_EVERY = 50
# A call is counted from when its slot is taken; it reaches the API a little later (a thread
# switch, a connection). Counting it for this much longer than the window keeps the API's own
# count, over any window, within the budget: 5 % of the window, at most 2 s (300 s: 0.7 %).
_SEND_GUARD_FRACTION, _SEND_GUARD_MAX_SECONDS = 0.05, 2.0
# The largest burst: this fraction of the budget (at least one call) in as much of the window.
_BURST_FRACTION = 0.1
# A transaction chosen as a deadlock's victim is run again, this many times in all.
_DEADLOCK_ATTEMPTS = 3
# A freed slot is tried a little after it frees, so the retry does not find it still taken.
_MARGIN_SECONDS = 0.005

_T = TypeVar("_T")


class SharedBudget:
    """CALLS per SECONDS for everything that shares the database (sync.transport.Budget)."""

    def __init__(self, engine: Engine, calls: int, seconds: float, name: str = "partner-api"):
        self.engine, self.calls, self.name = engine, calls, name
        self.window = seconds + min(_SEND_GUARD_MAX_SECONDS, _SEND_GUARD_FRACTION * seconds)
        self.burst = max(1, math.ceil(_BURST_FRACTION * calls))
        self.burst_window = self.window * self.burst / calls
        self._taken = 0
        self._row_exists = False

    def __repr__(self) -> str:
        return f"SharedBudget({self.calls}/{self.window:g}s)"

    def reserve(self) -> float:
        """Take a slot for one call now and return 0.0, or return how many seconds to wait
        before asking again (the budget is spent, or a 429 paused every process).

        Raises:
            StoreError: the database failed.
        """
        return self._locked("reserve_rate_slot", "taking a slot of the rate budget", self._reserve)

    def pause(self, seconds: float) -> None:
        """Hold every process's calls for `seconds` from now (a 429's Retry-After)."""

        def hold(conn: sa.Connection) -> None:
            blocked, now = self._lock_state(conn)
            until = as_utc(now) + timedelta(seconds=seconds)
            if blocked is None or blocked < until:
                conn.execute(
                    sa.update(sync_rate_state)
                    .where(sync_rate_state.c.budget == self.name)
                    .values(blocked_until=until)
                )

        self._locked("pause_rate_budget", "pausing the rate budget", hold)

    def _locked(self, name: str, action: str, body: Callable[[sa.Connection], _T]) -> _T:
        """Run `body` in one transaction that starts by locking the budget's row. The row is
        created first, in a transaction of its own: on MariaDB, processes that lock a missing row
        all take its gap and then deadlock inserting it. A transaction the database still picks as
        a deadlock's victim has written nothing and is run again."""
        if not self._row_exists:
            with operation(self.engine, "create_rate_state", action), self.engine.begin() as conn:
                insert_missing(conn, sync_rate_state, {"budget": self.name})
            self._row_exists = True
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                with operation(self.engine, name, action), self.engine.connect() as conn:
                    conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
                    with conn.begin():
                        return body(conn)
            except StoreError as error:
                if attempt == _DEADLOCK_ATTEMPTS or not is_deadlock(error.__cause__):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _reserve(self, conn: sa.Connection) -> float:
        calls = sync_rate_calls
        blocked, now = self._lock_state(conn)
        now = as_utc(now)
        if blocked is not None and blocked > now:
            return float((blocked - now).total_seconds())
        since = now - timedelta(seconds=self.window)
        recent_since = now - timedelta(seconds=self.burst_window)
        in_window = (calls.c.budget == self.name, calls.c.at > since)
        recent = sa.func.coalesce(sa.func.sum(sa.case((calls.c.at > recent_since, 1), else_=0)), 0)
        used, burst = conn.execute(sa.select(sa.func.count(), recent).where(*in_window)).one()
        if used < self.calls and burst < self.burst:
            conn.execute(sa.insert(calls).values(budget=self.name, at=now))
            self._taken += 1
            if self._taken % _PRUNE_EVERY == 0:
                old = sa.delete(calls).where(calls.c.budget == self.name, calls.c.at <= since)
                conn.execute(old)
            return 0.0
        # A slot frees when the call that fills the window (or the burst) leaves it.
        waits = []
        for full, limit, start in ((used, self.calls, since), (burst, self.burst, recent_since)):
            if full >= limit:
                oldest = conn.execute(
                    sa.select(calls.c.at)
                    .where(calls.c.budget == self.name, calls.c.at > start)
                    .order_by(calls.c.at)
                    .offset(full - limit)
                    .limit(1)
                ).scalar_one()
                waits.append((as_utc(oldest) - start).total_seconds())
        return max(_MARGIN_SECONDS, max(waits) + _MARGIN_SECONDS)

    def _lock_state(self, conn: sa.Connection) -> tuple[datetime | None, object]:
        """Lock the budget's row (created again if someone emptied the table) and read its
        pause and the database's now."""
        for _ in range(2):
            row = conn.execute(
                sa.select(sync_rate_state.c.blocked_until, now_column(conn))
                .where(sync_rate_state.c.budget == self.name)
                .with_for_update()
            ).first()
            if row is not None:
                return row[0], row[1]
            insert_missing(conn, sync_rate_state, {"budget": self.name})
        raise AssertionError("the budget row could not be created")  # pragma: no cover
