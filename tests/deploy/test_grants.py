"""README's GRANT statements: the owner migrates, the DML account syncs, the reader reads, and
each is refused what it was not given, on PostgreSQL and MariaDB."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.emulator import Emulator
from sync.job import CycleOptions, run_once
from sync.migrate import ensure_schema, upgrade
from sync.settings import Settings, load
from sync.status import collect
from sync.store import create_engine
from sync.wiring import build_client
from tests.conftest import IN_CI, MARIADB_ADMIN_URL, POSTGRES_ADMIN_URL, REPO

pytestmark = pytest.mark.db

README = REPO / "docs" / "deploy.md"
PASSWORD = "change-me"
ROLES = ("comm100_sync_owner", "comm100_sync", "bi_reader")
DATABASE = "bi"
# README "For BI", verbatim: before `migrate` (as an administrator) and after it.
POSTGRESQL_BEFORE = """\
CREATE ROLE comm100_sync_owner LOGIN PASSWORD 'change-me';
CREATE ROLE comm100_sync LOGIN PASSWORD 'change-me';
CREATE ROLE bi_reader LOGIN PASSWORD 'change-me';
CREATE DATABASE bi OWNER comm100_sync_owner;
REVOKE ALL ON DATABASE bi FROM PUBLIC;
GRANT CONNECT ON DATABASE bi TO comm100_sync, bi_reader;"""
POSTGRESQL_AFTER = """\
GRANT USAGE ON SCHEMA public TO comm100_sync, bi_reader;
GRANT SELECT, INSERT, UPDATE ON platforms, platform_audit, sync_runs, sync_auth_state, \
sync_token_cache, sync_state TO comm100_sync;
GRANT DELETE ON sync_runs TO comm100_sync;
GRANT SELECT ON alembic_version TO comm100_sync;
GRANT USAGE ON SEQUENCE platform_audit_id_seq, sync_runs_id_seq TO comm100_sync;
GRANT SELECT ON platforms_current, platform_history, platforms, platform_audit, sync_runs \
TO bi_reader;"""
MARIADB_BEFORE = """\
CREATE DATABASE bi CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER 'comm100_sync_owner'@'%' IDENTIFIED BY 'change-me';
CREATE USER 'comm100_sync'@'%' IDENTIFIED BY 'change-me';
CREATE USER 'bi_reader'@'%' IDENTIFIED BY 'change-me';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE VIEW, \
SHOW VIEW ON bi.* TO 'comm100_sync_owner'@'%';"""
MARIADB_AFTER = """\
GRANT SELECT, INSERT, UPDATE ON bi.platforms TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.platform_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON bi.sync_runs TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.sync_auth_state TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.sync_token_cache TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.sync_state TO 'comm100_sync'@'%';
GRANT SELECT ON bi.alembic_version TO 'comm100_sync'@'%';
GRANT SELECT ON bi.platforms_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.platform_history TO 'bi_reader'@'%';
GRANT SELECT ON bi.platforms TO 'bi_reader'@'%';
GRANT SELECT ON bi.platform_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.sync_runs TO 'bi_reader'@'%';"""
ADMIN_URLS = {"postgresql": POSTGRES_ADMIN_URL, "mariadb": MARIADB_ADMIN_URL}


def literal(engine: Engine, statement: str) -> str:
    """`statement` for exec_driver_sql: PyMySQL %-formats even without parameters."""
    return statement.replace("%", "%%") if engine.dialect.name != "postgresql" else statement


@dataclass
class Accounts:
    """One server's throwaway database and the three accounts README creates on it."""

    backend: str
    admin: Engine
    suffix: str

    def name(self, generic: str) -> str:
        return f"{generic}_{self.suffix}"

    def statements(self, block: str) -> list[str]:
        """README's statements with this test's database and account names."""
        for generic in (*ROLES, DATABASE):
            block = re.sub(rf"\b{generic}\b", self.name(generic), block)
        return [s.strip() for s in block.split(";\n") if s.strip().rstrip(";")]

    def url(self, role: str) -> str:
        return (
            self.admin.url.set(
                username=self.name(role), password=PASSWORD, database=self.name(DATABASE)
            )
        ).render_as_string(hide_password=False)

    def run(self, engine: Engine, block: str) -> None:
        with engine.connect() as conn:
            for statement in self.statements(block):
                conn.exec_driver_sql(literal(engine, statement.rstrip(";")))
            conn.commit()

    def drop(self) -> None:
        with self.admin.connect() as conn:
            if self.backend == "postgresql":
                conn.exec_driver_sql(
                    f'DROP DATABASE IF EXISTS "{self.name(DATABASE)}" WITH (FORCE)'
                )
                for role in ROLES:
                    conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{self.name(role)}"')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.name(DATABASE)}`")
                for role in ROLES:
                    drop_user = f"DROP USER IF EXISTS '{self.name(role)}'@'%'"
                    conn.exec_driver_sql(literal(self.admin, drop_user))


@pytest.fixture(params=list(ADMIN_URLS))
def accounts(request: pytest.FixtureRequest) -> Iterator[Accounts]:
    backend = str(request.param)
    admin = sa.create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as error:
        admin.dispose()
        message = f"{backend} server unavailable: {error}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    made = Accounts(backend, admin, uuid.uuid4().hex[:8])
    try:
        yield made
    finally:
        made.drop()
        admin.dispose()


def refused(engine: Engine, statement: str) -> bool:
    """True when the server refuses `statement` (a privilege error), False when it runs."""
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    except sa.exc.DBAPIError as error:
        text = str(error.orig).lower()
        assert "denied" in text or "permission" in text, text
        return True
    return False


def sync_with(url: str, emulator: Emulator, platforms: list[dict[str, Any]]) -> str:
    """One real cycle through `url`'s account, as `once` with SYNC_AUTO_MIGRATE=false runs it."""
    settings: Settings = load(
        Settings,
        client_id=emulator.client_id,
        email=emulator.email,
        password=emulator.password,
        auth_url=emulator.auth_url,
        api_url=emulator.api_url,
        database_url=url,
    )
    engine = create_engine(settings.database_url, lock_wait_seconds=1.0)
    try:
        ensure_schema(engine, auto_migrate=False)
        emulator.set_platforms(platforms)
        result = run_once(
            engine, build_client(settings, engine), CycleOptions(max_delete_fraction=1.0)
        )
        assert result.error is None, result.error
        return result.status
    finally:
        engine.dispose()


def test_readme_holds_the_grants_tested_here() -> None:
    text = " ".join(README.read_text().split())
    for block in (POSTGRESQL_BEFORE, POSTGRESQL_AFTER, MARIADB_BEFORE, MARIADB_AFTER):
        assert " ".join(block.split()) in text


def test_readme_grants_give_each_account_what_it_needs_and_no_more(
    accounts: Accounts, emulator: Emulator
) -> None:
    before, after = (
        (POSTGRESQL_BEFORE, POSTGRESQL_AFTER)
        if accounts.backend == "postgresql"
        else (MARIADB_BEFORE, MARIADB_AFTER)
    )
    accounts.run(accounts.admin, before)
    owner = create_engine(accounts.url("comm100_sync_owner"))
    try:
        upgrade(owner)
        # PostgreSQL: the owner grants on its own tables; MariaDB: the administrator does.
        accounts.run(owner if accounts.backend == "postgresql" else accounts.admin, after)
    finally:
        owner.dispose()

    sync_url, reader_url = accounts.url("comm100_sync"), accounts.url("bi_reader")
    # Insert, rename, removal and restore: every write path of a cycle.
    statuses = [
        sync_with(sync_url, emulator, platforms)
        for platforms in (
            [{"id": 1, "name": "US"}, {"id": 2, "name": "EU"}],
            [{"id": 1, "name": "USA"}],
            [{"id": 1, "name": "USA"}, {"id": 2, "name": "EU"}],
        )
    ]
    assert statuses == ["success"] * 3

    dml = create_engine(sync_url)
    reader = create_engine(reader_url)
    try:
        assert collect(dml, limit=5, max_age_seconds=900)["healthy"] is True
        assert refused(dml, "DELETE FROM platforms")
        assert refused(dml, "CREATE TABLE intruder (i INTEGER)")
        with reader.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM platforms_current").scalar() == 2
            assert conn.exec_driver_sql("SELECT count(*) FROM platform_history").scalar() == 4
            assert conn.exec_driver_sql("SELECT count(*) FROM sync_runs").scalar() == 3
        assert refused(reader, "UPDATE platforms SET name = 'x'")
        assert refused(reader, "DELETE FROM sync_runs")
    finally:
        dml.dispose()
        reader.dispose()
