"""Engines with per-dialect settings, and the translation of database errors into StoreError."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

from sync import tracing
from sync.errors import StoreError
from sync.models import canonical_json

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10
# Execution option naming how a SQLite transaction begins: IMMEDIATE takes the write lock
# before the current rows are read.
SQLITE_BEGIN = "sqlite_begin"
# The extra that installs each driver module SQLAlchemy may fail to import.
DRIVER_EXTRAS = {"psycopg": "postgresql", "pymysql": "mysql"}


def create_engine(url: str, *, lock_wait_seconds: float = 5.0, **kwargs: Any) -> Engine:
    """An Engine for `url` tuned for this job: UTC sessions, bounded connect and lock waits."""
    from sync.errors import ConfigError

    try:
        parsed = sa.engine.make_url(url)
    except (exc.ArgumentError, ValueError):
        # SQLAlchemy's message quotes the URL, password included: say it without it.
        raise ConfigError(
            "invalid settings: SYNC_DATABASE_URL: not a database URL SQLAlchemy can read "
            "(expected e.g. postgresql://user:password@host/database)"
        ) from None
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {"pool_pre_ping": True, "json_serializer": canonical_json}
    # A row or table lock held by another writer fails the statement after the lock wait, as
    # SQLite's busy timeout does, instead of stalling the cycle for ever ('database locked': 75).
    if backend == "postgresql":
        lock_timeout_ms = max(1, round(lock_wait_seconds * 1000))
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "comm100-sync",
            "options": f"-c timezone=UTC -c lock_timeout={lock_timeout_ms}",
        }
    elif backend in ("mysql", "mariadb"):
        lock_timeout_s = max(1, math.ceil(lock_wait_seconds))
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "charset": "utf8mb4",
            "init_command": (
                f"SET time_zone = '+00:00', innodb_lock_wait_timeout = {lock_timeout_s}, "
                f"lock_wait_timeout = {lock_timeout_s}"
            ),
        }
    elif backend == "sqlite":
        connect_args = {"timeout": lock_wait_seconds}
    options.update(kwargs)
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    except ImportError as error:
        # The drivers are extras: a SQLite install has neither.
        extra = DRIVER_EXTRAS.get(error.name or "")
        hint = f": pip install 'comm100-sync[{extra}]'" if extra else ""
        raise ConfigError(
            f"invalid settings: SYNC_DATABASE_URL: its driver {error.name or '?'} is not "
            f"installed{hint}"
        ) from None
    except (exc.ArgumentError, exc.NoSuchModuleError) as error:
        raise ConfigError(f"invalid settings: SYNC_DATABASE_URL: {error}") from None
    if backend == "sqlite":
        _tune_sqlite(engine, lock_wait_seconds)
    return engine


def _tune_sqlite(engine: Engine, lock_wait_seconds: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN, so a sync can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(lock_wait_seconds * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if engine.url.database not in (None, "", ":memory:"):
                # Readers (dashboards, `status`) never block the writer, nor it them.
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def describe_db_error(error: BaseException) -> str:
    """One line about a database failure: the driver's message, no SQL, no parameters."""
    original = getattr(error, "orig", None) or error
    text = " ".join(str(original).split())
    kind = type(original).__name__
    return f"database error ({kind}): {text[:300]}"


# MariaDB/MySQL ER_LOCK_DEADLOCK; PostgreSQL's deadlock_detected.
_MYSQL_DEADLOCK, _POSTGRES_DEADLOCK = 1213, "40P01"


def is_deadlock(error: BaseException | None) -> bool:
    """Whether the database rolled this statement's transaction back to break a deadlock."""
    original = getattr(error, "orig", None)
    if original is None:
        return False
    if getattr(original, "sqlstate", None) == _POSTGRES_DEADLOCK:
        return True
    args: tuple[object, ...] = getattr(original, "args", ())
    return bool(args) and args[0] == _MYSQL_DEADLOCK


@contextlib.contextmanager
def operation(engine: Engine, name: str, action: str) -> Iterator[tracing.Traced]:
    """One store operation (one transaction): a span `store.<name>`, and its database failures
    as StoreError "`action`: …". The span carries the database, never a statement or a value."""
    system = engine.dialect.name
    attributes = {
        "db.system": system,
        "db.system.name": system,
        "db.namespace": engine.url.database,
        "sync.store.operation": name,
    }
    with tracing.span(f"store.{name}", attributes) as span, translate_errors(action):
        yield span


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn SQLAlchemy/DBAPI failures into StoreError naming what we were doing."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        raise StoreError(f"{action}: {describe_db_error(error)}") from error
