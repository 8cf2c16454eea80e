"""The built wheel, installed in a fresh virtual environment, migrates with no checkout around."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.schema import SCHEMA_REVISION

# Building and installing fetch hatchling and the dependencies from the package index.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.needs_index]

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_SECONDS = 300
INSTALL_TIMEOUT_SECONDS = 600
RUN_TIMEOUT_SECONDS = 60


def run(
    command: list[str], *, timeout: float, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def outside_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no SYNC_* settings, nothing pointing at the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNC_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"))
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        timeout=BUILD_TIMEOUT_SECONDS,
        env=outside_env(),
    )
    (built,) = out.glob("comm100_sync-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """bin/ of a fresh virtual environment with the wheel and its dependencies from the index."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)], timeout=RUN_TIMEOUT_SECONDS)
    run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        timeout=INSTALL_TIMEOUT_SECONDS,
        env=outside_env(),
    )
    yield venv / "bin"


def test_wheel_carries_the_alembic_environment_and_every_migration(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    versions = {p.name for p in (REPO / "migrations" / "versions").glob("*.py")}
    assert versions
    assert "sync/migrations/env.py" in names
    assert "sync/migrations/script.py.mako" in names
    assert {f"sync/migrations/versions/{name}" for name in versions} <= names


def test_installed_command_migrates_a_sqlite_file_outside_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    database = tmp_path / "fresh.db"
    env = outside_env(SYNC_DATABASE_URL=f"sqlite:///{database}", SYNC_ENV_FILE="")
    where = run(
        [str(installed / "python"), "-c", "import sync; print(sync.__file__)"],
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.parent)

    result = run(
        [str(installed / "comm100-sync"), "migrate"],
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,
        env=env,
    )

    assert SCHEMA_REVISION in result.stdout
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"platforms", "platform_audit", "sync_runs", "alembic_version"} <= tables
    assert revision == SCHEMA_REVISION


def test_installed_command_shows_its_help(installed: Path, tmp_path: Path) -> None:
    result = run(
        [str(installed / "comm100-sync"), "--help"],
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,
        env=outside_env(),
    )

    assert "migrate" in result.stdout


def test_a_plain_install_has_no_database_driver_and_serves_sqlite_alone(
    installed: Path, tmp_path: Path
) -> None:
    """The drivers are extras: without them the demo (SQLite) works, PostgreSQL names its extra."""
    probe = run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('psycopg'), u.find_spec('pymysql'))",
        ],
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,
        env=outside_env(),
    )
    assert probe.stdout.split() == ["None", "None"]

    demo = run(
        [str(installed / "comm100-sync"), "demo", "--database", str(tmp_path / "demo.db")],
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,
        env=outside_env(SYNC_ENV_FILE=""),
    )
    assert "rows per list" in demo.stdout

    refused = subprocess.run(
        [str(installed / "comm100-sync"), "migrate"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,
        env=outside_env(SYNC_ENV_FILE="", SYNC_DATABASE_URL="postgresql://sync@127.0.0.1/bi"),
        check=False,
    )
    assert refused.returncode == 78
    assert "pip install 'comm100-sync[postgresql]'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
