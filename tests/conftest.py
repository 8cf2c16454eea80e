"""Shared fixtures: a clean environment, throwaway databases on every backend, the emulator.

Database servers come from SYNC_TEST_POSTGRES_URL / SYNC_TEST_MARIADB_URL (admin URLs; defaults are
the local servers). Each test session creates its own databases and drops them at the end. A
developer without a server gets a skip; under CI (CI=true) a missing server is a failure.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from sync.emulator import DEFAULT_CLIENT_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD, Emulator
from sync.schema import metadata
from sync.settings import Settings
from sync.store import create_engine

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "SYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_ADMIN_URL = os.environ.get(
    "SYNC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
BACKENDS = ("sqlite", "postgresql", "mariadb")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer setting, .env file, secrets directory, proxy or OpenTelemetry variable
    (an OTLP endpoint would turn tracing on) leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("SYNC_", "OTEL_")) and not name.startswith("SYNC_TEST_"):
            monkeypatch.delenv(name)
    for name in (*_PROXY_VARS, *(v.lower() for v in _PROXY_VARS), "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SYNC_ENV_FILE", "")
    empty = tmp_path / "no-secrets"
    empty.mkdir()
    monkeypatch.setenv("SYNC_SECRETS_DIR", str(empty))
    monkeypatch.chdir(tmp_path)


# --------------------------------------------------------------------------- databases


def _unavailable(backend: str, error: Exception) -> None:
    message = f"{backend} server unavailable: {type(error).__name__}: {error}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class DatabaseServer:
    """Creates and drops throwaway databases on one server (or SQLite files in a folder)."""

    backend: str
    admin_url: str | None
    folder: Path
    created: list[str] = field(default_factory=list)

    def create(self) -> str:
        name = f"c100sync_{uuid.uuid4().hex[:12]}"
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder / (name + '.db')}"
        assert self.admin_url is not None
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                if self.backend == "postgresql":
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                else:
                    conn.exec_driver_sql(
                        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    )
        finally:
            admin.dispose()
        self.created.append(name)
        return (
            sa.engine.make_url(self.admin_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )

    def drop_all(self) -> None:
        if self.backend == "sqlite" or not self.created:
            return
        assert self.admin_url is not None
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.created:
                if self.backend == "postgresql":
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                else:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


@pytest.fixture(scope="session")
def database_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("sqlite")
    servers: dict[str, Any] = {"sqlite": DatabaseServer("sqlite", None, folder)}
    for backend, url in (("postgresql", POSTGRES_ADMIN_URL), ("mariadb", MARIADB_ADMIN_URL)):
        try:
            probe = sa.create_engine(url, connect_args={"connect_timeout": 5})
            with probe.connect():
                pass
            probe.dispose()
            servers[backend] = DatabaseServer(backend, url, folder)
        except Exception as error:
            servers[backend] = error
    yield servers
    for server in servers.values():
        if isinstance(server, DatabaseServer):
            server.drop_all()


def _server(servers: dict[str, Any], backend: str) -> DatabaseServer:
    server = servers[backend]
    if isinstance(server, Exception):
        _unavailable(backend, server)
    assert isinstance(server, DatabaseServer)
    return server


@pytest.fixture(scope="session")
def migrated_urls(database_servers: dict[str, Any]) -> dict[str, str | Exception]:
    """One database per backend for the whole session, migrated to head once."""
    from sync.migrate import upgrade

    urls: dict[str, str | Exception] = {}
    for backend in BACKENDS:
        server = database_servers[backend]
        if isinstance(server, Exception):
            urls[backend] = server
            continue
        url = server.create()
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        urls[backend] = url
    return urls


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, migrated_urls: dict[str, str | Exception]) -> str:
    """URL of a migrated database whose tables are empty at the start of the test."""
    url = migrated_urls[backend]
    if isinstance(url, Exception):
        _unavailable(backend, url)
    assert isinstance(url, str)
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, lock_wait_seconds=1.0)
    yield engine
    engine.dispose()


@pytest.fixture
def empty_database_url(backend: str, database_servers: dict[str, Any]) -> str:
    """URL of a brand-new database with no tables (for migration tests)."""
    return _server(database_servers, backend).create()


# --------------------------------------------------------------------------- emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(rate_limit=None) as emu:
        yield emu


@pytest.fixture
def sync_env(emulator: Emulator) -> Callable[..., dict[str, str]]:
    """Environment for a `comm100-sync` subprocess pointed at the emulator and `database_url`."""

    def build(database_url: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "OTEL_"))}
        env.update(
            SYNC_CLIENT_ID="demo-client",
            SYNC_EMAIL="demo@example.com",
            SYNC_PASSWORD="demo-password",
            SYNC_AUTH_URL=emulator.auth_url,
            SYNC_API_URL=emulator.api_url,
            SYNC_DATABASE_URL=database_url,
            SYNC_ENV_FILE="",
            SYNC_SECRETS_DIR=os.environ["SYNC_SECRETS_DIR"],
            SYNC_HTTP_RETRIES="2",
            # The platform list only, unless a test asks for more lists.
            SYNC_RESOURCES="platforms",
            # No shared rate budget (the emulator sets none either), unless a test tests it.
            SYNC_RATE_LIMIT="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    return build


CLI = [sys.executable, "-m", "sync"]


def settings_for(emulator: Emulator, database_url: str, **overrides: Any) -> Settings:
    """Settings as `once` would load them, pointed at the emulator, with no file sources."""
    values: dict[str, Any] = {
        "client_id": DEFAULT_CLIENT_ID,
        "email": DEFAULT_EMAIL,
        "password": DEFAULT_PASSWORD,
        "auth_url": emulator.auth_url,
        "api_url": emulator.api_url,
        "database_url": database_url,
        "rate_limit": "0",
    }
    values.update(overrides)
    if not isinstance(values["password"], SecretStr):
        values["password"] = SecretStr(values["password"])
    return Settings(_env_file=None, _secrets_dir=None, **values)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- time


class FakeClock:
    """A monotonic clock that only moves when code sleeps or the test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
