"""The Alembic migrations: what they create, that they are idempotent, that they match schema.py,
that 0006 backfills old audit rows, that they go down and up again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from sync.errors import ConfigError
from sync.migrate import ensure_schema, upgrade
from sync.resources import REGISTRY
from sync.schema import (
    SCHEMA_REVISION,
    UTCDateTime,
    json_type,
    metadata,
    platform_audit,
    sync_runs,
)
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


# --------------------------------------------------------------------------- up and down

TABLES_AT_0005 = {
    "platforms",
    "platform_audit",
    "sync_runs",
    "sync_auth_state",
    "sync_token_cache",
    "sync_state",
    "alembic_version",
}
VIEWS_OF_0002 = {"platforms_current", "platform_history"}
VIEWS_AT_HEAD = {
    *VIEWS_OF_0002,
    *(f"{name}_current" for name in REGISTRY),
    "all_changes",
    "site_history",
}
CHANGED_AT = datetime(2026, 1, 2, 3, 5, 0, 500000, tzinfo=UTC)
# platform_audit as 0001 to 0005 left it: without changed_fields.
PLATFORM_AUDIT_AT_0005 = sa.table(
    "platform_audit",
    sa.column("id", sa.BigInteger()),
    sa.column("run_id", sa.BigInteger()),
    sa.column("partner_id", sa.String()),
    sa.column("platform_id", sa.BigInteger()),
    sa.column("action", sa.String()),
    sa.column("old_values", json_type()),
    sa.column("new_values", json_type()),
    sa.column("changed_at", UTCDateTime()),
)
# action, old_values, new_values → the changed_fields 0006 must compute for a row written before it
BACKFILL_CASES = [
    ("insert", None, {"id": 1, "name": "US"}, ["id", "name"]),
    ("delete", {"id": 2, "name": "EU", "region": None}, None, ["id", "name", "region"]),
    ("update", {"id": 1, "name": "US"}, {"id": 1, "name": "USA"}, ["name"]),
    # Keys on one side only count, even when their value is null.
    ("update", {"id": 1, "name": "US", "a": None}, {"id": 1, "name": "US", "b": 2}, ["a", "b"]),
    # Nested values are compared whole.
    (
        "update",
        {"id": 1, "m": {"x": [1, 2]}, "n": [3]},
        {"id": 1, "m": {"x": [1, 3]}, "n": [3]},
        ["m"],
    ),
    ("restore", {"id": 2, "name": "EU"}, {"id": 2, "name": "Europe"}, ["name"]),
    ("restore", {"id": 2, "name": "EU"}, {"id": 2, "name": "EU"}, []),
]
# More rows than the backfill's batch of 1000, so that it pages.
FILLER_ROWS = 1100


def alembic(engine: Engine, action: str, revision: str) -> None:
    """`alembic upgrade|downgrade revision` on `engine`, with the shipped scripts."""
    from alembic import command
    from alembic.config import Config

    from sync.migrate import script_location

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def head() -> str | None:
    return ScriptDirectory(str(REPO / "migrations")).get_current_head()


def view_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_view_names())


def audit_columns(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [column["name"] for column in sa.inspect(conn).get_columns("platform_audit")]


def write_platform_audit(
    engine: Engine,
    rows: list[tuple[str, Any, Any]],
    table: Any = PLATFORM_AUDIT_AT_0005,
    **extra: Any,
) -> None:
    """One run and its platform_audit rows (action, old_values, new_values)."""
    with engine.begin() as conn:
        run_id = conn.execute(
            sa.insert(sync_runs).values(
                resource="platforms", partner_id="p", started_at=STARTED_AT, status="success"
            )
        ).inserted_primary_key[0]
        conn.execute(
            sa.insert(table),
            [
                {
                    "run_id": run_id,
                    "partner_id": "p",
                    "platform_id": (new or old)["id"],
                    "action": action,
                    "old_values": old,
                    "new_values": new,
                    "changed_at": CHANGED_AT,
                    **extra,
                }
                for action, old, new in rows
            ],
        )


def changed_fields_by_id(engine: Engine) -> list[list[str]]:
    with engine.connect() as conn:
        query = sa.select(platform_audit.c.changed_fields).order_by(platform_audit.c.id)
        return [json.loads(v) if isinstance(v, str) else v for v in conn.execute(query).scalars()]


def test_0006_backfills_changed_fields_of_platform_audit_rows_written_before_it(
    empty_engine: Engine,
) -> None:
    alembic(empty_engine, "upgrade", "0005")
    filler = [("insert", None, {"id": n, "name": f"P{n}"}) for n in range(FILLER_ROWS)]
    write_platform_audit(
        empty_engine, [(action, old, new) for action, old, new, _ in BACKFILL_CASES] + filler
    )

    alembic(empty_engine, "upgrade", "head")

    assert changed_fields_by_id(empty_engine) == (
        [fields for *_row, fields in BACKFILL_CASES] + [["id", "name"]] * FILLER_ROWS
    )


def test_downgrade_to_0005_and_upgrade_again(empty_engine: Engine) -> None:
    """Down: the lists of 0006, their views and changed_fields go, platforms' rows stay. Up
    again: everything is back, changed_fields computed anew."""
    upgrade(empty_engine)
    # A wrong value, to see it computed again on the way up.
    row = ("insert", None, {"id": 1, "name": "US"})
    write_platform_audit(empty_engine, [row], platform_audit, changed_fields=["stale"])
    assert view_names(empty_engine) == VIEWS_AT_HEAD

    alembic(empty_engine, "downgrade", "0005")

    assert current_revision(empty_engine) == "0005"
    assert table_names(empty_engine) == TABLES_AT_0005
    assert view_names(empty_engine) == VIEWS_OF_0002
    assert "changed_fields" not in audit_columns(empty_engine)

    alembic(empty_engine, "upgrade", "head")

    assert current_revision(empty_engine) == head()
    assert table_names(empty_engine) == SYNCED_TABLES | {"alembic_version"}
    assert view_names(empty_engine) == VIEWS_AT_HEAD
    assert changed_fields_by_id(empty_engine) == [["id", "name"]]


def test_downgrade_of_0007_drops_its_views_and_nothing_else(empty_engine: Engine) -> None:
    upgrade(empty_engine)

    alembic(empty_engine, "downgrade", "0006")

    assert view_names(empty_engine) == VIEWS_OF_0002
    tables_of_0008 = {"sync_rate_calls", "sync_rate_state"}
    assert table_names(empty_engine) == (SYNCED_TABLES - tables_of_0008) | {"alembic_version"}
