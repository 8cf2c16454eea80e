"""named_lock: one holder at a time across connections and processes, freed when the holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from sync.store import create_engine, named_lock

pytestmark = pytest.mark.db

LOCK = "comm100-sync:platforms:test-partner"
WAIT_SECONDS = 0.5
# Holds the lock named argv[2] on the database argv[1] until killed.
HOLDER = """
import sys, time
from sync.store import create_engine, named_lock
engine = create_engine(sys.argv[1])
with named_lock(engine, sys.argv[2], 5) as held:
    print("held" if held else "refused", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def other_engine(database_url: str) -> Iterator[Engine]:
    """A second engine on the same database: its own connections, as another host's would be."""
    engine = create_engine(database_url, lock_wait_seconds=1.0)
    yield engine
    engine.dispose()


def test_second_holder_is_refused_after_waiting(engine: Engine, other_engine: Engine) -> None:
    with named_lock(engine, LOCK, 0) as first:
        started = time.monotonic()
        with named_lock(other_engine, LOCK, WAIT_SECONDS) as second:
            waited = time.monotonic() - started

    assert first is True
    assert second is False
    assert WAIT_SECONDS * 0.9 <= waited < WAIT_SECONDS + 2


def test_waiting_holder_gets_the_lock_as_soon_as_the_first_releases_it(
    engine: Engine, other_engine: Engine
) -> None:
    taken, release = threading.Event(), threading.Event()

    def hold_briefly() -> None:
        with named_lock(engine, LOCK, 0) as held:
            assert held
            taken.set()
            release.wait(5)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    try:
        assert taken.wait(5)
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        with named_lock(other_engine, LOCK, 5) as second:
            waited = time.monotonic() - started
    finally:
        release.set()
        holder.join(5)

    assert second is True
    assert 0.2 <= waited < 3


def test_lock_is_released_at_the_end_of_the_block_even_after_an_error(
    engine: Engine, other_engine: Engine
) -> None:
    with pytest.raises(KeyError), named_lock(engine, LOCK, 0) as held:
        assert held
        raise KeyError("boom")

    with named_lock(other_engine, LOCK, 0) as again:
        assert again is True


def test_locks_with_different_names_do_not_exclude_each_other(
    engine: Engine, other_engine: Engine
) -> None:
    with named_lock(engine, LOCK, 0) as first, named_lock(other_engine, LOCK + "-2", 0) as second:
        assert (first, second) == (True, True)


def test_same_lock_on_another_database_of_the_same_server_is_independent(
    engine: Engine, empty_database_url: str
) -> None:
    """Staging and production, or two test runs, may share a server but never their locks."""
    elsewhere = create_engine(empty_database_url, lock_wait_seconds=1.0)
    try:
        with named_lock(engine, LOCK, 0) as here, named_lock(elsewhere, LOCK, 0) as there:
            assert (here, there) == (True, True)
    finally:
        elsewhere.dispose()


def test_lock_of_a_killed_process_is_free_afterwards(database_url: str, engine: Engine) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database_url, LOCK], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with named_lock(engine, LOCK, 0) as while_alive:
            assert while_alive is False

        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with named_lock(engine, LOCK, 5) as after_kill:
            waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()

    assert after_kill is True
    assert waited < 2
