"""The database's clock: the one clock every process that shares the database agrees on."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Now, in UTC, to the microsecond where the database keeps them (SQLite: milliseconds).
_NOW = {
    "postgresql": "clock_timestamp()",
    "mysql": "UTC_TIMESTAMP(6)",
    "mariadb": "UTC_TIMESTAMP(6)",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def now_column(conn: Connection) -> sa.ColumnElement[object]:
    """The database's `now` as a column to select beside others."""
    return sa.literal_column(_NOW[conn.dialect.name]).label("db_now")


def as_utc(value: object) -> datetime:
    """A `now_column` value as an aware UTC datetime, whatever the driver returned."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def db_now(conn: Connection) -> datetime:
    return as_utc(conn.execute(sa.select(now_column(conn))).scalar_one())
