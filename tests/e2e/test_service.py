"""`comm100-sync run` and `once` as real processes: the loop, faults, recovery, signals, replicas,
metrics. Every wait is for something observable (a gate reached, a line logged, a row written)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from sync.emulator import Emulator, Fault
from sync.schema import platform_audit, platforms, sync_runs

from ..conftest import CLI
from .helpers import (
    STOP_LIMIT_SECONDS,
    PausePoint,
    free_port,
    query,
    run_statuses,
    running,
    wait_until,
)

pytestmark = pytest.mark.e2e

EnvBuilder = Callable[..., dict[str, str]]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sync.db'}"


def count(url: str, table: sa.Table) -> int:
    return int(query(url, sa.select(sa.func.count()).select_from(table))[0][0])


def test_a_failing_api_is_recorded_and_the_loop_recovers(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    emulator.inject("platforms", Fault(kind="status", status=503), times=3)
    env = sync_env(sqlite_url, SYNC_INTERVAL_SECONDS="0.5", SYNC_HTTP_RETRIES="0")
    with running(env) as process:
        wait_until(lambda: "success" in run_statuses(sqlite_url), what="a successful cycle")
        code, _ = process.stop()
    assert code == 0, process.stderr
    statuses = run_statuses(sqlite_url)
    assert statuses[:3] == ["failed", "failed", "failed"]
    assert "success" in statuses[3:]
    assert "HTTP 503" in process.stderr


def test_a_database_that_is_down_at_start_is_waited_for(
    sync_env: EnvBuilder, emulator: Emulator, database_servers: dict[str, object]
) -> None:
    """The database does not exist when the loop starts; once it does, cycles succeed."""
    server = database_servers["postgresql"]
    if isinstance(server, Exception):
        pytest.skip(f"PostgreSQL unavailable: {server}")
    url = server.create()  # type: ignore[attr-defined]
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(server.admin_url, isolation_level="AUTOCOMMIT")  # type: ignore[attr-defined]
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}"')
    env = sync_env(url, SYNC_INTERVAL_SECONDS="0.5")
    try:
        with running(env) as process:
            # Two failed ticks: the loop survived the first and tried again.
            process.wait_for_line("database error", count=2)
            assert process.popen.poll() is None, "the loop must survive a missing database"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            wait_until(lambda: "success" in run_statuses(url), what="a cycle after recovery")
            code, _ = process.stop()
    finally:
        admin.dispose()
    assert code == 0, process.stderr
    assert count(url, platforms) == 3


def test_sigterm_during_the_interval_wait_exits_0_promptly(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    env = sync_env(sqlite_url, SYNC_INTERVAL_SECONDS="3600")
    with running(env) as process:
        wait_until(lambda: run_statuses(sqlite_url) == ["success"], what="the first cycle")
        code, took = process.stop()
    assert code == 0, process.stderr
    assert took < STOP_LIMIT_SECONDS


# --------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("command", ["run", "once"])
def test_sigterm_while_a_request_is_in_flight_lets_the_cycle_finish(
    command: str, sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    """A rolling deploy must not throw away a cycle that is about to finish."""
    gate = emulator.gate("platforms")
    env = sync_env(sqlite_url, SYNC_INTERVAL_SECONDS="3600")
    with running(env, command) as process:
        assert gate.wait_arrived()
        process.signal()
        process.wait_for_line("SIGTERM received")
        gate.release()
        code = process.finish()
    assert code == 0, process.stderr
    assert run_statuses(sqlite_url) == ["success"]
    assert count(sqlite_url, platforms) == count(sqlite_url, platform_audit) == 3


@pytest.mark.parametrize("command", ["run", "once"])
@pytest.mark.parametrize("hold", ["gate", "drip", "retry_wait"])
def test_sigterm_cuts_what_would_outlive_the_stop_timeout_and_records_it_as_interrupted(
    command: str, hold: str, sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    if hold == "gate":
        emulator.gate("platforms")  # held until the emulator stops
    elif hold == "drip":
        emulator.inject("platforms", Fault(kind="drip", delay_seconds=0.5))
    else:
        emulator.inject("platforms", Fault(kind="status", status=503, retry_after="30"), times=None)
    env = sync_env(
        sqlite_url,
        SYNC_INTERVAL_SECONDS="3600",
        SYNC_HTTP_RETRIES="5",
        SYNC_STOP_TIMEOUT_SECONDS="1",
    )
    with running(env, command) as process:
        wait_until(lambda: run_statuses(sqlite_url) == ["running"], what="the cycle to start")
        wait_until(lambda: emulator.count_requests("/v4/global/platforms") >= 1, what="the request")
        code, took = process.stop()
    assert code == (0 if command == "run" else 75), process.stderr
    assert took < 1 + STOP_LIMIT_SECONDS / 2
    assert count(sqlite_url, platforms) == count(sqlite_url, platform_audit) == 0
    ((status, error),) = query(sqlite_url, sa.select(sync_runs.c.status, sync_runs.c.error))
    assert status == "interrupted"
    assert "nothing was committed" in error


def test_sigterm_to_once_after_its_commit_never_rewrites_the_success(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    pause = PausePoint(tmp_path / "pause", "after_commit")
    env = sync_env(sqlite_url) | pause.env
    with running(env, "once") as process:
        pause.wait_reached()
        process.signal()
        process.wait_for_line("SIGTERM received")
        pause.release()
        code = process.finish()
    assert code == 0, process.stderr
    ((status, error, run_id),) = query(
        sqlite_url, sa.select(sync_runs.c.status, sync_runs.c.error, sync_runs.c.id)
    )
    assert (status, error) == ("success", None)
    audit_runs = {row[0] for row in query(sqlite_url, sa.select(platform_audit.c.run_id))}
    assert audit_runs == {run_id}


def test_a_killed_run_is_marked_failed_by_the_next_cycle(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    gate = emulator.gate("platforms")
    env = sync_env(sqlite_url)
    with running(env, "once") as process:
        assert gate.wait_arrived()
        assert run_statuses(sqlite_url) == ["running"]
        process.kill()
    gate.release()
    done = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = query(sqlite_url, sa.select(sync_runs.c.status, sync_runs.c.error).order_by("id"))
    assert [r[0] for r in rows] == ["failed", "success"]
    assert str(rows[0][1]).startswith("abandoned")


# --------------------------------------------------------------------------- replicas


def test_two_loops_and_a_once_audit_each_change_exactly_once(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator
) -> None:
    env = sync_env(database_url, SYNC_INTERVAL_SECONDS="0.3", SYNC_LOCK_WAIT_SECONDS="0.05")
    emulator.set_platforms([{"id": i, "name": f"p{i}"} for i in range(1, 51)])

    def successes() -> int:
        return run_statuses(database_url).count("success")

    with running(env) as first, running(env) as second:
        once = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)
        assert once.returncode == 0, once.stderr
        wait_until(lambda: successes() >= 4, what="cycles")
        emulator.set_platforms(
            [{"id": i, "name": f"p{i}" if i % 10 else f"renamed {i}"} for i in range(1, 51)]
        )
        wait_until(
            lambda: (
                query(
                    database_url,
                    sa.select(sa.func.count()).where(platform_audit.c.action == "update"),
                )[0][0]
                == 5
            ),
            what="the renames",
        )
        # More cycles of both loops after the renames, which must find nothing to do.
        after = successes()
        wait_until(lambda: successes() >= after + 6, what="more cycles")
        for process in (first, second):
            code, _ = process.stop()
            assert code == 0, process.stderr
    audit = query(
        database_url,
        sa.select(platform_audit.c.platform_id, platform_audit.c.action, sa.func.count()).group_by(
            platform_audit.c.platform_id, platform_audit.c.action
        ),
    )
    assert all(count == 1 for _, _, count in audit)
    assert sorted(a for _, a, _ in audit).count("insert") == 50
    assert sorted(a for _, a, _ in audit).count("update") == 5
    statuses = set(run_statuses(database_url))
    assert statuses <= {"success", "skipped", "interrupted"}, statuses


# --------------------------------------------------------------------------- metrics


def test_metrics_parse_and_healthz_turns_503_when_syncs_stop_succeeding(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    port = free_port()
    env = sync_env(
        sqlite_url,
        SYNC_INTERVAL_SECONDS="0.3",
        SYNC_METRICS_PORT=str(port),
        SYNC_METRICS_HOST="127.0.0.1",
        SYNC_HEALTH_MAX_AGE_SECONDS="1.5",
        SYNC_HTTP_RETRIES="0",
    )
    base = f"http://127.0.0.1:{port}"
    with running(env) as process:
        wait_until(lambda: run_statuses(sqlite_url).count("success") >= 2, what="successes")
        health = requests.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        text = requests.get(f"{base}/metrics", timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        cycles = families["comm100_sync_cycles"]
        assert any(
            s.labels == {"partner_id": "10000", "resource": "platforms", "status": "success"}
            and s.value >= 2
            for s in cycles.samples
        )
        assert "comm100_sync_last_success_timestamp_seconds" in families
        assert "comm100_sync_cycle_duration_seconds" in families
        tokens = families["comm100_sync_token_requests"]
        assert [(s.labels, s.value) for s in tokens.samples if s.name.endswith("_total")] == [
            ({"account": "default", "grant": "password"}, 1.0)
        ]
        emulator.inject("platforms", Fault(kind="status", status=500), times=None)
        wait_until(
            lambda: requests.get(f"{base}/healthz", timeout=5).status_code == 503,
            what="/healthz to turn 503",
        )
        body = requests.get(f"{base}/healthz", timeout=5).json()
        assert body["status"] == "stale" and "500" in body["last_error"]
        # Freshness is gone, liveness is not: Kubernetes must not restart the pod for this.
        assert requests.get(f"{base}/livez", timeout=5).status_code == 200
        code, _ = process.stop()
    assert code == 0, process.stderr
