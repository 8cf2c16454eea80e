"""INSERT … ON CONFLICT / ON DUPLICATE KEY for small state rows, spelt per dialect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def upsert_row(conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> None:
    """Insert `values`, or update every non-key column of the row with the same primary key."""
    keys = [column.name for column in table.primary_key.columns]
    changes = {name: value for name, value in values.items() if name not in keys}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table).values(**values)
        conn.execute(pg.on_conflict_do_update(index_elements=keys, set_=changes))
    elif dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        my = mysql_insert(table).values(**values)
        conn.execute(my.on_duplicate_key_update(**changes))
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table).values(**values)
        conn.execute(lite.on_conflict_do_update(index_elements=keys, set_=changes))


def insert_missing(conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> None:
    """Insert `values` unless a row with the same primary key exists; never writes over one."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
    elif dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        # A no-op update rather than INSERT IGNORE, which would also hide other errors.
        key = table.primary_key.columns.values()[0].name
        my = mysql_insert(table).values(**values)
        conn.execute(my.on_duplicate_key_update({key: my.inserted[key]}))
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
