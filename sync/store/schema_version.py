"""Where the database's schema stands, read with plain SQL (no Alembic import on the hot path)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.store.engine import translate_errors


def current_revision(engine: Engine) -> str | None:
    """The revision in alembic_version, or None for a database never migrated."""
    with translate_errors("reading the schema revision"), engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
