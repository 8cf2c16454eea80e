"""`comm100-sync run` as a real process: the loop, faults, recovery, signals, replicas, metrics."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from sync.emulator import Emulator, Fault
from sync.schema import platform_audit, platforms, sync_runs
from sync.store import create_engine

from ..conftest import CLI

pytestmark = pytest.mark.e2e

EnvBuilder = Callable[..., dict[str, str]]
STOP_LIMIT_SECONDS = 10


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def service(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[str]]:
    """A `comm100-sync run` process; killed if the test did not stop it."""
    process = subprocess.Popen(
        [*CLI, *(args or ("run",))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def stop(process: subprocess.Popen[str]) -> tuple[int, float, str]:
    """SIGTERM; returns exit code, seconds it took to exit, and stderr."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=STOP_LIMIT_SECONDS + 5)
    return process.returncode, time.monotonic() - started, stderr


def query(url: str, statement: sa.Executable) -> list[sa.Row[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement).all())
    finally:
        engine.dispose()


def run_statuses(url: str) -> list[str]:
    """Statuses of sync_runs in order; empty while the database or the schema is not there."""
    try:
        rows = query(url, sa.select(sync_runs.c.status).order_by(sync_runs.c.id))
    except sa.exc.DBAPIError:
        return []
    return [row[0] for row in rows]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sync.db'}"


def test_a_failing_api_is_recorded_and_the_loop_recovers(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    emulator.inject("platforms", Fault(kind="status", status=503), times=3)
    env = sync_env(sqlite_url, SYNC_INTERVAL_SECONDS="0.5", SYNC_HTTP_RETRIES="0")
    with service(env) as process:
        wait_until(lambda: "success" in run_statuses(sqlite_url), what="a successful cycle")
        code, _, stderr = stop(process)
    assert code == 0, stderr
    statuses = run_statuses(sqlite_url)
    assert statuses[:3] == ["failed", "failed", "failed"]
    assert "success" in statuses[3:]
    assert "HTTP 503" in stderr


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
        with service(env) as process:
            time.sleep(1.5)
            assert process.poll() is None, "the loop must survive a missing database"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            wait_until(lambda: "success" in run_statuses(url), what="a cycle after recovery")
            code, _, stderr = stop(process)
    finally:
        admin.dispose()
    assert code == 0, stderr
    assert "database error" in stderr
    assert query(url, sa.select(sa.func.count()).select_from(platforms))[0][0] == 3


def test_sigterm_during_the_interval_wait_exits_0_promptly(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    env = sync_env(sqlite_url, SYNC_INTERVAL_SECONDS="3600")
    with service(env) as process:
        wait_until(lambda: run_statuses(sqlite_url) == ["success"], what="the first cycle")
        code, took, stderr = stop(process)
    assert code == 0, stderr
    assert took < STOP_LIMIT_SECONDS


@pytest.mark.parametrize("fault", ["delay", "drip", "retry_wait"])
def test_sigterm_during_a_cycle_writes_nothing_and_exits_0_in_time(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator, fault: str
) -> None:
    env = sync_env(sqlite_url, SYNC_INTERVAL_SECONDS="3600", SYNC_HTTP_RETRIES="5")
    if fault == "delay":
        emulator.inject("platforms", Fault(kind="delay", delay_seconds=4))
    elif fault == "drip":
        emulator.inject("platforms", Fault(kind="drip", delay_seconds=0.5))
    else:
        emulator.inject("platforms", Fault(kind="status", status=503, retry_after="30"), times=None)
    emulator.set_platforms([{"id": 1, "name": "one"}])
    with service(env) as process:
        wait_until(lambda: emulator.stats["token_password"] == 1, what="the cycle to start")
        time.sleep(1.0)
        code, took, stderr = stop(process)
    assert code == 0, stderr
    assert took < STOP_LIMIT_SECONDS
    assert query(sqlite_url, sa.select(sa.func.count()).select_from(platforms))[0][0] == 0
    assert query(sqlite_url, sa.select(sa.func.count()).select_from(platform_audit))[0][0] == 0
    assert run_statuses(sqlite_url) == ["failed"]


def test_a_killed_run_is_marked_failed_by_the_next_cycle(
    sync_env: EnvBuilder, sqlite_url: str, emulator: Emulator
) -> None:
    emulator.inject("platforms", Fault(kind="delay", delay_seconds=30))
    env = sync_env(sqlite_url)
    with service(env, "once") as process:
        wait_until(lambda: run_statuses(sqlite_url) == ["running"], what="a running row")
        process.kill()
    emulator.clear_faults()
    done = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = query(sqlite_url, sa.select(sync_runs.c.status, sync_runs.c.error).order_by("id"))
    assert [r[0] for r in rows] == ["failed", "success"]
    assert str(rows[0][1]).startswith("abandoned")


def test_two_loops_and_a_once_audit_each_change_exactly_once(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator
) -> None:
    env = sync_env(database_url, SYNC_INTERVAL_SECONDS="0.3", SYNC_LOCK_WAIT_SECONDS="0.05")
    emulator.set_platforms([{"id": i, "name": f"p{i}"} for i in range(1, 51)])
    with service(env) as first, service(env) as second:
        once = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)
        assert once.returncode == 0, once.stderr
        wait_until(lambda: run_statuses(database_url).count("success") >= 4, what="cycles")
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
        time.sleep(1.0)  # more cycles of both loops, which must find nothing to do
        for process in (first, second):
            code, _, stderr = stop(process)
            assert code == 0, stderr
    audit = query(
        database_url,
        sa.select(platform_audit.c.platform_id, platform_audit.c.action, sa.func.count()).group_by(
            platform_audit.c.platform_id, platform_audit.c.action
        ),
    )
    assert all(count == 1 for _, _, count in audit)
    assert sorted(a for _, a, _ in audit).count("insert") == 50
    assert sorted(a for _, a, _ in audit).count("update") == 5
    runs = query(database_url, sa.select(sync_runs.c.status, sync_runs.c.error))
    assert "running" not in {status for status, _ in runs}
    # The only failure allowed is a cycle cut short by the SIGTERM that ended its loop.
    assert all("stop" in str(error) for status, error in runs if status == "failed"), runs


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
    with service(env) as process:
        wait_until(lambda: run_statuses(sqlite_url).count("success") >= 2, what="successes")
        health = requests.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        text = requests.get(f"{base}/metrics", timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        cycles = families["comm100_sync_cycles"]
        assert any(
            s.labels == {"resource": "platforms", "status": "success"} and s.value >= 2
            for s in cycles.samples
        )
        assert "comm100_sync_last_success_timestamp_seconds" in families
        assert "comm100_sync_cycle_duration_seconds" in families
        tokens = families["comm100_sync_token_requests"]
        assert [s.value for s in tokens.samples if s.name.endswith("_total")] == [1.0]
        emulator.inject("platforms", Fault(kind="status", status=500), times=None)
        wait_until(
            lambda: requests.get(f"{base}/healthz", timeout=5).status_code == 503,
            what="/healthz to turn 503",
        )
        body = requests.get(f"{base}/healthz", timeout=5).json()
        assert body["status"] == "stale" and "500" in body["last_error"]
        code, _, stderr = stop(process)
    assert code == 0, stderr
