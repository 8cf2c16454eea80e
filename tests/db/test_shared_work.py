"""What replicas share through the database, on every backend: the rate budget (never more than
CALLS in any SECONDS-long window, a pause after a 429) and the claims on due work."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync import store
from sync.emulator import Emulator
from sync.errors import StoreError
from sync.metrics import Health
from sync.scheduler import Service
from sync.schema import sync_rate_calls, sync_rate_state
from sync.store.budget import SharedBudget
from sync.store.clock import db_now
from sync.store.engine import is_deadlock

from ..conftest import FakeClock, settings_for
from ..e2e.helpers import wait_until

pytestmark = pytest.mark.db


@pytest.fixture
def keep_every_call(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No pruning of old calls, so the test can check every window afterwards."""
    import sync.store.budget

    monkeypatch.setattr(sync.store.budget, "_PRUNE_EVERY", 10**9)
    yield


def call_times(engine: Engine) -> list[datetime]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(sync_rate_calls.c.at).order_by("at")).scalars())


def most_in_any_window(times: list[datetime], seconds: float) -> int:
    window = timedelta(seconds=seconds)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        most = max(most, end - start + 1)
    return most


# --------------------------------------------------------------------------- the budget


def test_a_burst_of_a_tenth_of_the_budget_goes_at_once_then_calls_are_paced(
    engine: Engine,
) -> None:
    budget = SharedBudget(engine, calls=30, seconds=60)  # bursts of 3 per 6.2 s (with guard)

    taken = [budget.reserve() for _ in range(3)]
    wait = budget.reserve()

    assert taken == [0.0, 0.0, 0.0]
    assert 6.0 < wait <= 6.21
    assert len(call_times(engine)) == 3


def test_a_full_window_says_when_its_oldest_call_leaves_it(engine: Engine) -> None:
    """Thirty calls spread over the last minute: no burst, but the window is full."""
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(
            sa.insert(sync_rate_calls),
            [{"budget": "partner-api", "at": now - timedelta(seconds=50 - i)} for i in range(30)],
        )
    budget = SharedBudget(engine, calls=30, seconds=60)

    wait = budget.reserve()

    # The oldest, 50 s ago, leaves the 62 s counted (60 s and a 2 s guard) in about 12 s.
    assert 11.9 < wait <= 12.1
    assert len(call_times(engine)) == 30


def test_a_pause_holds_every_caller_without_using_the_budget(engine: Engine) -> None:
    first, second = SharedBudget(engine, 100, 60), SharedBudget(engine, 100, 60)

    first.pause(30)

    assert 29 < second.reserve() <= 30
    assert call_times(engine) == []
    first.pause(5)  # a shorter pause never shortens the one in force
    assert 29 < second.reserve() <= 30


def test_many_callers_at_once_never_exceed_the_budget_in_any_window(
    engine: Engine, keep_every_call: None
) -> None:
    """Six threads, each with a budget object of its own (as separate processes have), take
    as many calls as they can: at no moment does any window hold more than CALLS."""
    calls, seconds, wanted = 8, 0.5, 40
    taken: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller() -> None:
        try:
            take()
        except BaseException as error:
            errors.append(error)

    def take() -> None:
        budget = SharedBudget(engine, calls, seconds)
        while True:
            with lock:
                if len(taken) >= wanted:
                    return
            wait = budget.reserve()
            if wait == 0.0:
                with lock:
                    taken.append(1)
            else:
                threading.Event().wait(min(wait, seconds))

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    times = call_times(engine)
    assert wanted <= len(times) <= wanted + 6
    assert most_in_any_window(times, seconds) <= calls
    # While callers wait, the budget is used: the calls take about wanted/calls windows.
    assert (times[-1] - times[0]).total_seconds() < (len(times) / calls) * seconds * 1.6


def test_the_budget_row_exists_before_any_transaction_locks_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On MariaDB, callers that lock the missing row all take its gap and then deadlock
    inserting it (the test above failed so in 5 of 8 runs), so the row is created first."""
    rows_when_locked: list[int] = []
    lock_state = SharedBudget._lock_state

    def counting(self: SharedBudget, conn: sa.Connection) -> tuple[datetime | None, object]:
        with engine.connect() as other:
            count = sa.select(sa.func.count()).select_from(sync_rate_state)
            rows_when_locked.append(other.execute(count).scalar_one())
        return lock_state(self, conn)

    monkeypatch.setattr(SharedBudget, "_lock_state", counting)

    assert SharedBudget(engine, 10, 60).reserve() == 0.0
    SharedBudget(engine, 10, 60).pause(1)

    assert rows_when_locked == [1, 1]


def deadlock() -> sa.exc.OperationalError:
    import pymysql

    victim = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
    return sa.exc.OperationalError("SELECT", {}, victim)


def test_a_transaction_picked_as_a_deadlock_victim_is_run_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = [deadlock(), deadlock()]
    lock_state = SharedBudget._lock_state

    def twice_a_victim(self: SharedBudget, conn: sa.Connection) -> tuple[datetime | None, object]:
        if failures:
            raise failures.pop()
        return lock_state(self, conn)

    monkeypatch.setattr(SharedBudget, "_lock_state", twice_a_victim)

    assert SharedBudget(engine, 10, 60).reserve() == 0.0
    assert failures == [] and len(call_times(engine)) == 1


@pytest.mark.parametrize(
    ("failure", "attempts"),
    [(deadlock, 3), (lambda: sa.exc.OperationalError("SELECT", {}, OSError("gone")), 1)],
    ids=["deadlock every time", "other failure"],
)
def test_a_lasting_deadlock_or_any_other_failure_is_a_store_error(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[], sa.exc.OperationalError],
    attempts: int,
) -> None:
    tried: list[int] = []

    def failing(self: SharedBudget, conn: sa.Connection) -> tuple[datetime | None, object]:
        tried.append(1)
        raise failure()

    monkeypatch.setattr(SharedBudget, "_lock_state", failing)

    with pytest.raises(StoreError, match="taking a slot of the rate budget"):
        SharedBudget(engine, 10, 60).reserve()
    assert len(tried) == attempts and call_times(engine) == []


def test_deadlocks_are_told_apart_by_each_drivers_code() -> None:
    import psycopg.errors
    import pymysql

    def wrapped(original: Exception) -> sa.exc.OperationalError:
        return sa.exc.OperationalError("SELECT", {}, original)

    assert is_deadlock(deadlock())
    assert is_deadlock(wrapped(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert not is_deadlock(wrapped(psycopg.errors.LockNotAvailable("lock timeout")))
    assert not is_deadlock(wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout")))
    assert not is_deadlock(wrapped(OSError("gone"))) and not is_deadlock(None)


# --------------------------------------------------------------------------- claims


def test_due_work_comes_never_synced_first_then_most_overdue(engine: Engine) -> None:
    keys = [("platforms", "p"), ("sites", "p"), ("plans", "p")]
    assert store.claim(engine, ("sites", "p"), 0.05, "replica-a")
    assert store.claim(engine, ("platforms", "p"), 0.01, "replica-a")
    wait_until(lambda: len(store.due(engine, keys)) == 3, what="both claims to fall due")

    assert store.due(engine, keys) == [("plans", "p"), ("platforms", "p"), ("sites", "p")]


def test_a_claim_is_taken_once_until_the_work_is_due_again(engine: Engine) -> None:
    key = ("platforms", "p")

    assert store.claim(engine, key, 3600, "replica-a")
    assert not store.claim(engine, key, 3600, "replica-b")
    assert store.due(engine, [key]) == []
    assert store.claim(engine, key, 3600, "a once process", force=True)

    next_due, owner, now = store.schedule(engine)[key]
    assert owner == "a once process"
    assert next_due is not None and 3590 < (next_due - now).total_seconds() <= 3600


def test_replicas_claiming_at_the_same_moment_get_the_work_once(engine: Engine) -> None:
    key = ("agents", "p")
    store.claim(engine, key, 0.001, "warm-up")  # the row exists; it is due again at once
    with engine.connect() as conn:
        wait_until(lambda: store.due(engine, [key]) == [key], what="the key to be due")
        assert db_now(conn) is not None
    start = threading.Barrier(8)
    won: list[str] = []

    def replica(name: str) -> None:
        start.wait()
        if store.claim(engine, key, 3600, name):
            won.append(name)

    threads = [threading.Thread(target=replica, args=(f"r{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(won) == 1
    assert store.schedule(engine)[key][1] == won[0]


# --------------------------------------------------------------------------- freshness


def test_a_replica_reports_the_lists_another_replica_synced(
    emulator: Emulator, database_url: str, clock: FakeClock
) -> None:
    """Replica A wins the list; replica B makes no request for it, yet its /healthz and its
    last-success gauge follow A's success (read from the run history), so B stays ready and
    the alert rules see the deployment's freshness from either."""
    settings = settings_for(emulator, database_url, resources="platforms")
    first, second = Service(settings), Service(settings)
    try:
        first.work()
        requests = emulator.count_requests()
        second.health = Health(settings.max_age_of, clock=clock, resources=("platforms",))
        clock.advance(settings.max_age_of("platforms") + 1)
        assert second.health.check()[0] is False  # nothing of its own for a long while

        second.work()

        assert emulator.count_requests() == requests  # nothing was due: A claimed it
        assert second.health.check()[0] is True
        (success,) = store.last_successes(second.engine, [("platforms", "10000")]).values()
        gauge = second.metrics.registry.get_sample_value(
            "comm100_sync_last_success_timestamp_seconds",
            {"partner_id": "10000", "resource": "platforms"},
        )
        assert gauge == success.timestamp()
    finally:
        for service in (first, second):
            service.pool.shutdown()
            service.engine.dispose()
