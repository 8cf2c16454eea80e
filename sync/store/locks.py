"""Named cross-process locks: one cycle per partner and resource at a time, one migration at a time.

PostgreSQL: a session advisory lock; MariaDB/MySQL: GET_LOCK, named per database since its
names are server-wide; SQLite: flock on a file beside the database. Each dies with its holder
(connection closed, process exited), so a killed job never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.store.engine import operation

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1


def _pg_key(name: str) -> int:
    """A signed 64-bit advisory-lock key derived from `name`."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def _mysql_name(database: str | None, name: str) -> str:
    # GET_LOCK names are server-wide (advisory locks are per database) and at most 64 characters.
    scoped = f"{database or ''}/{name}"
    return "comm100-sync/" + hashlib.blake2b(scoped.encode(), digest_size=20).hexdigest()


def _poll(try_once: Callable[[], bool], wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    while True:
        if try_once():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


@contextlib.contextmanager
def named_lock(engine: Engine, name: str, wait_seconds: float) -> Iterator[bool]:
    """Hold the lock `name` for the block; yields False if it could not be had in time."""
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        with _sqlite_lock(engine, name, wait_seconds) as held:
            yield held
        return
    # The span covers the wait for the lock, not the holding of it.
    with operation(engine, "lock", "taking the sync lock") as span:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            held, release = _take(conn, backend, name, wait_seconds)
        except BaseException:
            conn.close()
            raise
        span.set({"sync.lock.acquired": held})
    try:
        try:
            yield held
        finally:
            if held and release is not None:
                try:
                    conn.execute(release)
                except sa.exc.SQLAlchemyError:
                    # The connection is broken, so the server has dropped the lock with it.
                    conn.invalidate()
    finally:
        conn.close()


def _take(
    conn: sa.Connection, backend: str, name: str, wait_seconds: float
) -> tuple[bool, sa.TextClause | None]:
    """Try for `wait_seconds` to take the lock `name` on `conn`: (held, its release)."""
    if backend == "postgresql":
        key = _pg_key(name)
        held = _poll(
            lambda: bool(
                conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            ),
            wait_seconds,
        )
        return held, sa.text("SELECT pg_advisory_unlock(:k)").bindparams(k=key)
    if backend in ("mysql", "mariadb"):
        lock_name = _mysql_name(conn.engine.url.database, name)
        got = conn.execute(
            sa.text("SELECT GET_LOCK(:n, :t)"), {"n": lock_name, "t": wait_seconds}
        ).scalar()
        return got == 1, sa.text("SELECT RELEASE_LOCK(:n)").bindparams(n=lock_name)
    # pragma: no cover - other dialects get no cross-process guarantee
    log.warning("no cross-process lock for %s; relying on transactions", backend)
    return True, None


@contextlib.contextmanager
def _sqlite_lock(engine: Engine, name: str, wait_seconds: float) -> Iterator[bool]:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        # One process owns an in-memory database; nothing to coordinate with.
        yield True
        return
    import fcntl

    suffix = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    path = Path(f"{database}.{suffix}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:

        def try_once() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        with operation(engine, "lock", "taking the sync lock") as span:
            held = _poll(try_once, wait_seconds)
            span.set({"sync.lock.acquired": held})
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
