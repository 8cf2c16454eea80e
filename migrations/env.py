"""Alembic environment: the caller's connection when given, else SYNC_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context

from sync.schema import metadata
from sync.settings import DEFAULT_DATABASE_URL, normalise_database_url


def _configure_and_run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _configure_and_run(connection)
elif context.is_offline_mode():
    url = normalise_database_url(os.environ.get("SYNC_DATABASE_URL", DEFAULT_DATABASE_URL))
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    from sync.store import create_engine

    url = normalise_database_url(os.environ.get("SYNC_DATABASE_URL", DEFAULT_DATABASE_URL))
    engine = create_engine(url)
    with engine.begin() as conn:
        _configure_and_run(conn)
    engine.dispose()
