"""docs/deploy.md's GRANT statements: the owner migrates, the DML account syncs and writes every
list, the reader reads every view and BI table, and each is refused what it was not given, on
PostgreSQL and MariaDB."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.emulator import Emulator
from sync.job import CycleOptions, run_once
from sync.migrate import ensure_schema, upgrade
from sync.resources import REGISTRY
from sync.schema import sync_runs
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
# docs/deploy.md "Database accounts", verbatim: before `migrate` (as an administrator) and after.
POSTGRESQL_BEFORE = """\
CREATE ROLE comm100_sync_owner LOGIN PASSWORD 'change-me';
CREATE ROLE comm100_sync LOGIN PASSWORD 'change-me';
CREATE ROLE bi_reader LOGIN PASSWORD 'change-me';
CREATE DATABASE bi OWNER comm100_sync_owner;
REVOKE ALL ON DATABASE bi FROM PUBLIC;
GRANT CONNECT ON DATABASE bi TO comm100_sync, bi_reader;"""
POSTGRESQL_AFTER = """\
GRANT USAGE ON SCHEMA public TO comm100_sync, bi_reader;
GRANT SELECT, INSERT, UPDATE ON
  platforms, sites, products, plans, agents, departments, roles, site_products,
  platform_audit, site_audit, product_audit, plan_audit,
  agent_audit, department_audit, role_audit, site_product_audit,
  sync_runs, sync_auth_state, sync_token_cache, sync_state, sync_rate_state
  TO comm100_sync;
GRANT SELECT, INSERT, DELETE ON sync_rate_calls TO comm100_sync;
GRANT DELETE ON sync_runs TO comm100_sync;
GRANT SELECT ON alembic_version TO comm100_sync;
GRANT USAGE ON SEQUENCE
  platform_audit_id_seq, site_audit_id_seq, product_audit_id_seq, plan_audit_id_seq,
  agent_audit_id_seq, department_audit_id_seq, role_audit_id_seq, site_product_audit_id_seq,
  sync_runs_id_seq, sync_rate_calls_id_seq
  TO comm100_sync;
GRANT SELECT ON
  platforms, sites, products, plans, agents, departments, roles, site_products,
  platform_audit, site_audit, product_audit, plan_audit,
  agent_audit, department_audit, role_audit, site_product_audit,
  platforms_current, sites_current, products_current, plans_current,
  agents_current, departments_current, roles_current, site_products_current,
  all_changes, platform_history, site_history, sync_runs
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
GRANT SELECT, INSERT, UPDATE ON bi.sites TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.products TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.plans TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.agents TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.departments TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.roles TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.site_products TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.platform_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.site_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.product_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.plan_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.agent_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.department_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.role_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.site_product_audit TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON bi.sync_runs TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.sync_auth_state TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.sync_token_cache TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.sync_state TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, UPDATE ON bi.sync_rate_state TO 'comm100_sync'@'%';
GRANT SELECT, INSERT, DELETE ON bi.sync_rate_calls TO 'comm100_sync'@'%';
GRANT SELECT ON bi.alembic_version TO 'comm100_sync'@'%';
GRANT SELECT ON bi.platforms TO 'bi_reader'@'%';
GRANT SELECT ON bi.sites TO 'bi_reader'@'%';
GRANT SELECT ON bi.products TO 'bi_reader'@'%';
GRANT SELECT ON bi.plans TO 'bi_reader'@'%';
GRANT SELECT ON bi.agents TO 'bi_reader'@'%';
GRANT SELECT ON bi.departments TO 'bi_reader'@'%';
GRANT SELECT ON bi.roles TO 'bi_reader'@'%';
GRANT SELECT ON bi.site_products TO 'bi_reader'@'%';
GRANT SELECT ON bi.platform_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.site_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.product_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.plan_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.agent_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.department_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.role_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.site_product_audit TO 'bi_reader'@'%';
GRANT SELECT ON bi.platforms_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.sites_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.products_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.plans_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.agents_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.departments_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.roles_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.site_products_current TO 'bi_reader'@'%';
GRANT SELECT ON bi.all_changes TO 'bi_reader'@'%';
GRANT SELECT ON bi.platform_history TO 'bi_reader'@'%';
GRANT SELECT ON bi.site_history TO 'bi_reader'@'%';
GRANT SELECT ON bi.sync_runs TO 'bi_reader'@'%';"""
ADMIN_URLS = {"postgresql": POSTGRES_ADMIN_URL, "mariadb": MARIADB_ADMIN_URL}
# The job's bookkeeping: never granted to BI roles. Every other table is the reader's.
NOT_FOR_READERS = {
    "sync_token_cache",
    "sync_auth_state",
    "sync_state",
    "sync_rate_calls",
    "sync_rate_state",
    "alembic_version",
}
WRITTEN_AT = datetime(2026, 3, 1, tzinfo=UTC)


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


def create_accounts_and_migrate(accounts: Accounts) -> None:
    """docs/deploy.md's order: accounts, `migrate` as the owner, then the table GRANTs."""
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


def write_every_list(engine: Engine) -> None:
    """What a cycle writes, in every list: a run, a live row, its update and its audit row."""
    with engine.begin() as conn:
        for resource in REGISTRY.values():
            run_id = conn.execute(
                sa.insert(sync_runs).values(
                    resource=resource.name, partner_id="p", started_at=WRITTEN_AT, status="running"
                )
            ).inserted_primary_key[0]
            key: dict[str, Any] = {"partner_id": "p", "id": 1 if resource.key == "int" else "k"}
            site = {"site_id": 10001} if resource.site_scoped else {}
            required = {c.name: "x" for c in resource.columns if c.required}
            document = {"raw": {"id": key["id"]}, "raw_hash": "0" * 32}
            times = {"first_seen_at": WRITTEN_AT, "updated_at": WRITTEN_AT}
            conn.execute(
                sa.insert(resource.table).values(**key, **site, **required, **document, **times)
            )
            conn.execute(
                resource.table.update()
                .where(*(resource.table.c[k] == v for k, v in {**key, **site}.items()))
                .values(raw_hash="1" * 32)
            )
            change = {"action": "insert", "new_values": document["raw"], "changed_fields": ["id"]}
            conn.execute(
                sa.insert(resource.audit).values(
                    run_id=run_id,
                    partner_id="p",
                    **site,
                    **{resource.audit_key: key["id"]},
                    **change,
                    changed_at=WRITTEN_AT,
                )
            )
            conn.execute(
                sync_runs.update()
                .where(sync_runs.c.id == run_id)
                .values(status="success", finished_at=WRITTEN_AT)
            )


def test_readme_grants_let_the_job_write_every_list_and_the_reader_read_every_view(
    accounts: Accounts,
) -> None:
    """Every table and view the migrations create is covered, without running a cycle."""
    create_accounts_and_migrate(accounts)
    owner = create_engine(accounts.url("comm100_sync_owner"))
    dml = create_engine(accounts.url("comm100_sync"))
    reader = create_engine(accounts.url("bi_reader"))
    try:
        with owner.connect() as conn:
            views = set(sa.inspect(conn).get_view_names())
            tables = set(sa.inspect(conn).get_table_names())

        write_every_list(dml)

        for name in sorted(views | (tables - NOT_FOR_READERS)):
            assert not refused(reader, f"SELECT count(*) FROM {name}"), name
        with reader.connect() as conn:
            for resource in REGISTRY:
                count = conn.exec_driver_sql(f"SELECT count(*) FROM {resource}_current").scalar()
                assert count == 1, resource
            assert conn.exec_driver_sql("SELECT count(*) FROM all_changes").scalar() == 8
            assert conn.exec_driver_sql("SELECT count(*) FROM site_history").scalar() == 1
        assert refused(reader, "SELECT * FROM sync_token_cache")
        assert refused(reader, "SELECT * FROM sync_auth_state")
        assert refused(reader, "UPDATE sites SET status = 'x'")
        assert refused(dml, "DELETE FROM agent_audit")
        assert refused(dml, "UPDATE alembic_version SET version_num = version_num")
        assert refused(dml, "UPDATE sites_current SET status = 'x'")
    finally:
        for engine in (owner, dml, reader):
            engine.dispose()


def test_readme_grants_give_each_account_what_it_needs_and_no_more(
    accounts: Accounts, emulator: Emulator
) -> None:
    create_accounts_and_migrate(accounts)

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
        report = collect(dml, limit=5, max_age_seconds=900, resources=["platforms"])
        assert report["healthy"] is True, report["reason"]
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
