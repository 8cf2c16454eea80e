"""The CLI as users call it: `python -m sync …` subprocesses against the emulator and SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sync.emulator import Emulator, Fault

from ..conftest import CLI
from .helpers import running, wait_until

pytestmark = pytest.mark.e2e

EnvBuilder = Callable[..., dict[str, str]]


def sync(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sync.db"


@pytest.fixture
def env(sync_env: EnvBuilder, db: Path) -> dict[str, str]:
    return sync_env(f"sqlite:///{db}")


def rows(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_once_syncs_the_platform_list_and_exits_0(env: dict[str, str], db: Path) -> None:
    done = sync(env, "once")
    assert done.returncode == 0, done.stderr
    assert "platforms success" in done.stderr
    assert rows(db, "SELECT id, name FROM platforms ORDER BY id") == [
        (100, "US"),
        (200, "EU"),
        (300, "AU"),
    ]
    assert rows(db, "SELECT action, count(*) FROM platform_audit GROUP BY action") == [
        ("insert", 3)
    ]


def test_a_second_once_without_change_writes_only_a_run_row(env: dict[str, str], db: Path) -> None:
    assert sync(env, "once").returncode == 0
    before = rows(db, "SELECT * FROM platforms ORDER BY id")
    assert sync(env, "once").returncode == 0
    assert rows(db, "SELECT * FROM platforms ORDER BY id") == before
    assert rows(db, "SELECT count(*) FROM platform_audit") == [(3,)]
    assert rows(db, "SELECT status, unchanged FROM sync_runs ORDER BY id") == [
        ("success", 0),
        ("success", 3),
    ]


def test_python_dash_m_sync_is_the_same_cli() -> None:
    done = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    for command in ("once", "run", "migrate", "status", "emulator", "demo"):
        assert command in done.stdout


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("SYNC_PASSWORD", None, "SYNC_PASSWORD: is required"),
        ("SYNC_CLIENT_ID", "", "SYNC_CLIENT_ID"),
        ("SYNC_API_URL", "http://example.com/v4", "SYNC_API_URL"),
        ("SYNC_AUTH_URL", "not a url", "SYNC_AUTH_URL"),
        ("SYNC_HTTP_RETRIES", "many", "SYNC_HTTP_RETRIES"),
        ("SYNC_DATABASE_URL", "nosuchdriver://x/y", "SYNC_DATABASE_URL"),
    ],
)
def test_configuration_errors_exit_78_with_one_line_before_contacting_anything(
    env: dict[str, str],
    db: Path,
    emulator: Emulator,
    variable: str,
    value: str | None,
    named: str,
) -> None:
    if value is None:
        env.pop(variable)
    else:
        env[variable] = value
    done = sync(env, "once")
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]
    assert emulator.requests == []
    assert not db.exists()


def test_configuration_error_never_shows_the_password(env: dict[str, str]) -> None:
    env["SYNC_PASSWORD"] = "canary-pw-1f3a9"
    env["SYNC_MAX_DELETE_FRACTION"] = "canary-pw-1f3a9"
    done = sync(env, "once")
    assert done.returncode == 78
    assert "canary-pw-1f3a9" not in done.stderr + done.stdout


def test_wrong_password_exits_77_after_a_single_token_request(
    env: dict[str, str], db: Path, emulator: Emulator
) -> None:
    env["SYNC_PASSWORD"] = "wrong-password"
    done = sync(env, "once")
    assert done.returncode == 77
    assert "invalid_grant" in done.stderr
    assert len([r for r in emulator.requests if r.path == "/oauth/token"]) == 1
    assert rows(db, "SELECT refusals, error FROM sync_auth_state") == [(1, "invalid_grant")]
    assert rows(db, "SELECT count(*) FROM platforms") == [(0,)]


def test_a_bad_payload_exits_65_and_changes_nothing(
    env: dict[str, str], db: Path, emulator: Emulator
) -> None:
    assert sync(env, "once").returncode == 0
    before = rows(db, "SELECT * FROM platforms ORDER BY id")
    emulator.inject("platforms", Fault(kind="html"))
    done = sync(env, "once")
    assert done.returncode == 65
    assert "text/html" in done.stderr
    assert rows(db, "SELECT * FROM platforms ORDER BY id") == before
    assert rows(db, "SELECT count(*) FROM platform_audit") == [(3,)]
    status, error = rows(db, "SELECT status, error FROM sync_runs ORDER BY id DESC LIMIT 1")[0]
    assert status == "failed" and "text/html" in str(error)


def test_the_delete_guard_exits_65_and_keeps_the_rows(
    env: dict[str, str], db: Path, emulator: Emulator
) -> None:
    assert sync(env, "once").returncode == 0
    emulator.set_platforms([])
    done = sync(env, "once")
    assert done.returncode == 65
    assert "SYNC_MAX_DELETE_FRACTION" in done.stderr
    assert rows(db, "SELECT count(*) FROM platforms WHERE deleted_at IS NULL") == [(3,)]


def test_server_errors_after_retries_exit_75(
    env: dict[str, str], db: Path, emulator: Emulator
) -> None:
    emulator.inject("platforms", Fault(kind="status", status=503, retry_after="0"), times=None)
    env["SYNC_HTTP_RETRIES"] = "2"
    done = sync(env, "once")
    assert done.returncode == 75
    assert "503" in done.stderr
    assert emulator.stats["platforms_fault"] == 3
    assert rows(db, "SELECT status FROM sync_runs") == [("failed",)]


def test_a_transient_error_is_retried_and_the_cycle_succeeds(
    env: dict[str, str], db: Path, emulator: Emulator
) -> None:
    emulator.inject("platforms", Fault(kind="status", status=502), times=1)
    done = sync(env, "once")
    assert done.returncode == 0, done.stderr
    assert rows(db, "SELECT count(*) FROM platforms") == [(3,)]


def test_an_unreachable_database_exits_75_without_calling_the_api(
    sync_env: EnvBuilder, emulator: Emulator
) -> None:
    env = sync_env("postgresql://postgres@127.0.0.1:1/nothing")
    done = sync(env, "once")
    assert done.returncode == 75
    assert len(done.stderr.strip().splitlines()) == 1
    assert emulator.requests == []


def test_a_held_lock_gives_a_skipped_run_and_exit_0(env: dict[str, str], db: Path) -> None:
    import sqlalchemy as sa  # noqa: F401 - the lock helper needs an engine

    from sync.job import lock_name
    from sync.resources import PLATFORMS
    from sync.store import create_engine, named_lock

    assert sync(env, "once").returncode == 0
    env["SYNC_LOCK_WAIT_SECONDS"] = "0.2"
    engine = create_engine(f"sqlite:///{db}")
    with named_lock(engine, lock_name(PLATFORMS, "10000"), 1) as held:
        assert held
        done = sync(env, "once")
    engine.dispose()
    assert done.returncode == 0
    assert "skipped" in done.stderr
    assert rows(db, "SELECT status FROM sync_runs ORDER BY id") == [("success",), ("skipped",)]


def test_partner_id_setting_is_sent_and_used(
    env: dict[str, str], db: Path, emulator: Emulator
) -> None:
    env["SYNC_PARTNER_ID"] = "10000"
    assert sync(env, "once").returncode == 0
    token_requests = [r for r in emulator.requests if r.path == "/oauth/token"]
    assert token_requests[0].query == {"partnerId": "10000"}
    assert rows(db, "SELECT DISTINCT partner_id FROM platforms") == [("10000",)]


def test_json_logs_are_one_object_per_line_and_never_show_secrets(
    env: dict[str, str], emulator: Emulator
) -> None:
    env |= {"SYNC_LOG_FORMAT": "json", "SYNC_LOG_LEVEL": "DEBUG"}
    done = sync(env, "once")
    assert done.returncode == 0
    lines = done.stderr.strip().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    assert any(r.get("event") == "cycle" and r.get("status") == "success" for r in records)
    assert all("run_id" in r for r in records if r.get("event") == "cycle")
    assert "demo-password" not in done.stderr


def test_migrate_is_idempotent(env: dict[str, str], db: Path) -> None:
    first = sync(env, "migrate")
    second = sync(env, "migrate")
    assert first.returncode == 0 and "migrated from empty" in first.stdout
    assert second.returncode == 0 and "already at" in second.stdout


def test_once_refuses_an_unmigrated_database_when_auto_migrate_is_off(
    env: dict[str, str], emulator: Emulator
) -> None:
    env["SYNC_AUTO_MIGRATE"] = "false"
    done = sync(env, "once")
    assert done.returncode == 78
    assert "comm100-sync migrate" in done.stderr
    assert emulator.requests == []


def test_status_reports_runs_and_health(env: dict[str, str]) -> None:
    never = sync(env, "status", "--json")
    assert never.returncode == 1
    assert sync(env, "once").returncode == 0
    done = sync(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    (platforms,) = json.loads(done.stdout)
    assert (platforms["resource"], platforms["partner_id"], platforms["account"]) == (
        "platforms", "10000", "default",
    )  # fmt: skip
    assert (platforms["rows"], platforms["deleted_rows"], platforms["healthy"]) == (3, 0, True)
    assert platforms["last_success_at"] and platforms["last_failure_at"] is None
    text = sync(env, "status")
    assert text.returncode == 0 and "health: OK" in text.stdout


def test_status_is_unhealthy_when_the_last_success_is_too_old(env: dict[str, str]) -> None:
    assert sync(env, "once").returncode == 0
    # A millisecond: older than any success a finished process can have left.
    env["SYNC_HEALTH_MAX_AGE_SECONDS"] = "0.001"
    done = sync(env, "status")
    assert done.returncode == 1
    assert "platforms of partner 10000: last success" in done.stdout
    (platforms,) = json.loads(sync(env, "status", "--json").stdout)
    assert platforms["healthy"] is False


def test_status_judges_each_list_by_its_own_interval(env: dict[str, str]) -> None:
    """A list with a longer SYNC_RESOURCE_INTERVALS entry is not stale at the default's age."""
    env["SYNC_RESOURCES"] = "platforms,sites"
    assert sync(env, "once").returncode == 0
    # Three of these intervals are a millisecond: any finished success is older.
    env["SYNC_INTERVAL_SECONDS"] = "0.0003"
    env["SYNC_RESOURCE_INTERVALS"] = "sites=3600"

    done = sync(env, "status", "--json")

    lists = {entry["resource"]: entry for entry in json.loads(done.stdout)}
    assert done.returncode == 1
    assert lists["platforms"]["healthy"] is False
    assert (lists["sites"]["healthy"], lists["sites"]["max_age_seconds"]) == (True, 10800)


def test_demo_shows_every_kind_of_change(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    done = subprocess.run(
        [*CLI, "demo", "--database", str(tmp_path / "demo.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for action in ("insert", "update", "delete", "restore"):
        assert f" {action} " in done.stdout
    assert "EU West" in done.stdout


def demo(database: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    return subprocess.run(
        [*CLI, "demo", "--database", str(database), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_refuses_to_overwrite_a_file_it_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "sync.db"
    precious.write_bytes(b"not the demo's")
    neighbours = [tmp_path / "sync.db.bak", tmp_path / "sync.dbx", tmp_path / "sync.db-journal"]
    for file in neighbours:
        file.write_text("keep me")

    done = demo(precious)

    assert done.returncode == 78
    assert "not a demo database" in done.stderr and "--force" in done.stderr
    assert precious.read_bytes() == b"not the demo's"
    assert all(file.read_text() == "keep me" for file in neighbours)


def test_demo_replaces_its_own_database_and_only_its_files(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    assert demo(database).returncode == 0
    neighbour = tmp_path / "demo.db.bak"
    neighbour.write_text("keep me")

    again = demo(database)

    assert again.returncode == 0, again.stderr
    assert neighbour.read_text() == "keep me"
    # A fresh start: five cycles of the eight lists.
    assert rows(database, "SELECT count(*) FROM sync_runs") == [(40,)]


def test_demo_force_replaces_any_file(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    other.write_bytes(b"scratch")

    done = demo(other, "--force")

    assert done.returncode == 0, done.stderr
    assert rows(other, "SELECT count(*) FROM platforms") == [(4,)]


def test_run_loops_reuses_the_token_and_stops_cleanly_on_sigterm(
    env: dict[str, str], db: Path, emulator: Emulator
) -> None:
    env["SYNC_INTERVAL_SECONDS"] = "0.5"
    with running(env) as process:
        wait_until(lambda: emulator.stats["platforms_ok"] >= 4, what="four cycles")
        code, took = process.stop()
    assert code == 0, process.stderr
    assert took < 10
    assert emulator.stats["token_password"] == 1
    statuses = {s for (s,) in rows(db, "SELECT status FROM sync_runs")}
    assert statuses == {"success"}


def test_emulator_command_serves_the_partner_api(tmp_path: Path) -> None:
    import requests

    process = subprocess.Popen(
        [*CLI, "emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "emulator listening on http://127.0.0.1:" in line
        url = line.split()[3]
        token = requests.post(
            f"{url}/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "demo-client",
                "email": "demo@example.com",
                "password": "demo-password",
            },
            timeout=5,
        ).json()["access_token"]
        listed = requests.get(
            f"{url}/v4/global/platforms", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert listed.status_code == 200 and listed.json()[0]["id"] == 100
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0


if sys.platform != "linux":  # pragma: no cover
    pytestmark = [pytest.mark.e2e, pytest.mark.skip("signals and flock are tested on Linux")]
