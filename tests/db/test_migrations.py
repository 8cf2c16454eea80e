"""The Alembic migrations: what they create, that they are idempotent, that they match schema.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from sync.errors import ConfigError
from sync.migrate import ensure_schema, upgrade
from sync.schema import SCHEMA_REVISION, metadata, sync_runs
from sync.store import create_engine, current_revision

pytestmark = pytest.mark.db

REPO = Path(__file__).resolve().parents[2]
SYNCED_TABLES = set(metadata.tables)
CLI_TIMEOUT_SECONDS = 60
STARTED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def empty_engine(empty_database_url: str) -> Iterator[Engine]:
    engine = create_engine(empty_database_url, lock_wait_seconds=1.0)
    yield engine
    engine.dispose()


def table_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def alembic_versions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def describe_schema(engine: Engine) -> dict[str, object]:
    """Columns, keys, indexes and checks of every table, as the database reports them."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {
            table: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                inspector.get_pk_constraint(table),
                inspector.get_foreign_keys(table),
                sorted(inspector.get_indexes(table), key=lambda index: str(index["name"])),
            )
            for table in sorted(inspector.get_table_names())
        }


def test_upgrade_on_an_empty_database_creates_every_table_at_the_schema_revision(
    empty_engine: Engine,
) -> None:
    assert table_names(empty_engine) == set()

    before = upgrade(empty_engine)

    assert before is None
    assert table_names(empty_engine) == SYNCED_TABLES | {"alembic_version"}
    assert alembic_versions(empty_engine) == [SCHEMA_REVISION]


def test_upgrading_twice_is_a_no_op(empty_engine: Engine) -> None:
    """The second upgrade changes neither the schema, nor alembic_version, nor the data."""
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(
            sa.insert(sync_runs).values(
                resource="platforms", partner_id="p", started_at=STARTED_AT, status="success"
            )
        )
    schema_before = describe_schema(empty_engine)

    before = upgrade(empty_engine)

    assert before == SCHEMA_REVISION
    assert alembic_versions(empty_engine) == [SCHEMA_REVISION]
    assert describe_schema(empty_engine) == schema_before
    with empty_engine.connect() as conn:
        assert conn.execute(sa.select(sync_runs.c.started_at)).scalars().all() == [STARTED_AT]


def test_models_and_migrations_agree(engine: Engine) -> None:
    """Autogenerate against a migrated database finds nothing to do: schema.py is the migrations."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, metadata)

    assert differences == []


def test_ensure_schema_without_auto_migrate_refuses_an_empty_database(
    empty_engine: Engine,
) -> None:
    with pytest.raises(ConfigError, match="comm100-sync migrate"):
        ensure_schema(empty_engine, auto_migrate=False)

    assert table_names(empty_engine) == set()


def test_ensure_schema_with_auto_migrate_upgrades_an_empty_database(empty_engine: Engine) -> None:
    ensure_schema(empty_engine, auto_migrate=True)

    assert current_revision(empty_engine) == SCHEMA_REVISION
    assert table_names(empty_engine) >= SYNCED_TABLES


def test_ensure_schema_refuses_a_database_migrated_by_a_newer_version(
    empty_engine: Engine,
) -> None:
    """A revision this code does not know is a configuration error, not a crash or a downgrade."""
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(ConfigError):
        ensure_schema(empty_engine, auto_migrate=True)

    assert alembic_versions(empty_engine) == ["9999"]


def test_schema_revision_is_the_single_alembic_head() -> None:
    script = ScriptDirectory(str(REPO / "migrations"))

    assert script.get_heads() == [SCHEMA_REVISION]


def run_migrate(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(
        SYNC_DATABASE_URL=database_url,
        SYNC_ENV_FILE="",
        SYNC_SECRETS_DIR=os.environ["SYNC_SECRETS_DIR"],
    )
    return subprocess.run(
        [sys.executable, "-m", "sync", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def test_migrate_command_creates_the_schema_then_reports_it_is_already_there(
    empty_database_url: str,
) -> None:
    first = run_migrate(empty_database_url)
    second = run_migrate(empty_database_url)

    assert first.returncode == 0, first.stderr
    assert f"migrated from empty to {SCHEMA_REVISION}" in first.stdout
    assert second.returncode == 0, second.stderr
    assert f"already at {SCHEMA_REVISION}" in second.stdout
    engine = create_engine(empty_database_url)
    try:
        assert table_names(engine) >= SYNCED_TABLES
        assert alembic_versions(engine) == [SCHEMA_REVISION]
    finally:
        engine.dispose()
