"""Database faults, crashes and races: the tables always hold a whole state, never a part, and
every change is audited exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy import event
from sqlalchemy.engine import Engine

from sync.emulator import DEFAULT_CLIENT_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD, Emulator
from sync.job import RunResult, lock_name, run_once
from sync.resources import PLATFORMS
from sync.schema import platform_audit, platforms, sync_runs
from sync.settings import Settings
from sync.store import create_engine
from sync.store.locks import _mysql_name
from sync.wiring import build_client, build_engine, cycle_options

from ..conftest import CLI
from ..conftest import settings_for as emulator_settings
from .helpers import PausePoint, query, running, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.db]

EnvBuilder = Callable[..., dict[str, str]]


def settings_for(emulator: Emulator, database_url: str, **overrides: Any) -> Settings:
    defaults = {"max_delete_fraction": 1.0, "lock_wait_seconds": 1}
    return emulator_settings(emulator, database_url, **(defaults | overrides))


def counts(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return (
                conn.execute(sa.select(sa.func.count()).select_from(platforms)).scalar_one(),
                conn.execute(sa.select(sa.func.count()).select_from(platform_audit)).scalar_one(),
            )
    finally:
        engine.dispose()


def statuses(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(sync_runs.c.status).order_by("id")).scalars())
    except sa.exc.DBAPIError:
        return []
    finally:
        engine.dispose()


def many(n: int, tag: str = "") -> list[dict[str, object]]:
    return [{"id": i, "name": f"platform {i}{tag}", "region": "r" * 20} for i in range(1, n + 1)]


@pytest.fixture
def cycle(emulator: Emulator, database_url: str) -> Iterator[Callable[..., RunResult]]:
    engines: list[Engine] = []

    def run(engine: Engine | None = None, **overrides: Any) -> RunResult:
        settings = settings_for(emulator, database_url, **overrides)
        if engine is None:
            engine = build_engine(settings)
            engines.append(engine)
        return run_once(engine, build_client(settings, engine), cycle_options(settings))

    yield run
    for engine in engines:
        engine.dispose()


# --------------------------------------------------------------------------- database faults


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])  # SQLite: see locked/full
def test_a_connection_killed_mid_transaction_writes_nothing_and_the_next_cycle_recovers(
    backend: str, database_url: str, emulator: Emulator, cycle: Callable[..., RunResult]
) -> None:
    emulator.set_platforms(many(50))
    engine = build_engine(settings_for(emulator, database_url))
    admin = create_engine(database_url)
    killed = []

    @event.listens_for(engine, "before_cursor_execute")
    def kill_during_audit(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            statement.startswith(("INSERT INTO platform_audit", "COPY platform_audit"))
            and not killed
        ):
            killed.append(True)
            pid_query = (
                "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
            )
            cursor.execute(pid_query)
            pid = cursor.fetchone()[0]
            with admin.connect() as other:
                if backend == "postgresql":
                    other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                else:
                    other.exec_driver_sql(f"KILL CONNECTION {int(pid)}")
                other.commit()

    result = cycle(engine=engine)
    admin.dispose()
    assert killed
    assert (result.status, result.exit_code) == ("failed", 75)
    assert "database error" in str(result.error)
    assert counts(database_url) == (0, 0)
    again = cycle(engine=engine)
    engine.dispose()
    assert again.status == "success" and again.counts["inserted"] == 50
    assert counts(database_url) == (50, 50)


def test_a_locked_sqlite_database_fails_with_75(tmp_path: Path, emulator: Emulator) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    settings = settings_for(emulator, url, lock_wait_seconds=0.3)
    engine = build_engine(settings)
    from sync.migrate import upgrade

    upgrade(engine)
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        result = run_once(engine, build_client(settings, engine), cycle_options(settings))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (result.status, result.exit_code) == ("failed", 75)
    assert "locked" in str(result.error)
    again = run_once(engine, build_client(settings, engine), cycle_options(settings))
    engine.dispose()
    assert again.status == "success"


def test_a_full_sqlite_disk_fails_with_75_and_writes_nothing(
    tmp_path: Path, emulator: Emulator
) -> None:
    path = tmp_path / "full.db"
    url = f"sqlite:///{path}"
    settings = settings_for(emulator, url)
    engine = build_engine(settings)
    from sync.migrate import upgrade

    upgrade(engine)
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()

    @event.listens_for(engine, "connect")
    def cap_size(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {int(pages) + 20}")

    engine.dispose()  # new connections get the cap
    emulator.set_platforms(many(5000))
    result = run_once(engine, build_client(settings, engine), cycle_options(settings))
    assert (result.status, result.exit_code) == ("failed", 75)
    assert "full" in str(result.error)
    engine.dispose()
    assert counts(url) == (0, 0)


# --------------------------------------------------------------------------- crashes


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_large_write_leaves_the_old_state_whole(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.set_platforms(many(20_000))
    env = sync_env(database_url, SYNC_MAX_DELETE_FRACTION="1.0")
    first = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert counts(database_url) == (20_000, 20_000)

    emulator.set_platforms(many(20_000, tag=" renamed"))
    pause = PausePoint(tmp_path / "pause", "after_first_batch")
    with running(env | pause.env, "once") as process:
        pause.wait_reached()  # the first batch of renames is written, not committed
        process.popen.kill()
        assert process.finish() == -signal.SIGKILL

    assert counts(database_url) == (20_000, 20_000)
    assert renamed(database_url) == 0
    assert statuses(database_url) == ["success", "running"]

    after = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)
    assert after.returncode == 0, after.stderr
    assert counts(database_url) == (20_000, 40_000)
    assert renamed(database_url) == 20_000
    assert statuses(database_url) == ["success", "failed", "success"]  # the killed one: abandoned


@pytest.mark.slow
def test_sigterm_in_the_middle_of_a_large_write_commits_it_whole_and_exits_0(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.set_platforms(many(20_000))
    pause = PausePoint(tmp_path / "pause", "after_first_batch")
    env = sync_env(database_url, SYNC_INTERVAL_SECONDS="3600") | pause.env
    with running(env) as process:
        pause.wait_reached()
        process.signal()
        process.wait_for_line("SIGTERM received")
        pause.release()
        code = process.finish()
    assert code == 0, process.stderr
    assert counts(database_url) == (20_000, 20_000)
    assert statuses(database_url) == ["success"]


def renamed(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(platforms.c.name.like("% renamed"))
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_sigterm_reaches_the_loop_running_as_pid_1_in_its_own_session(
    sync_env: EnvBuilder, tmp_path: Path, emulator: Emulator
) -> None:
    """As PID 1 the kernel drops signals that have no handler; ours must still stop the loop."""
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("unshare --pid is not permitted here")
    url = f"sqlite:///{tmp_path / 'pid1.db'}"
    env = sync_env(url, SYNC_INTERVAL_SECONDS="3600")
    outer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", *CLI, "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(lambda: "success" in statuses(url), what="the first cycle")
        children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
        assert len(children) == 1
        status = Path(f"/proc/{children[0]}/status").read_text()
        nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
        assert nspid.split()[-1] == "1", nspid
        started = time.monotonic()
        os.kill(int(children[0]), signal.SIGTERM)
        _, stderr = outer.communicate(timeout=15)
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.communicate()
    assert outer.returncode == 0, stderr
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- races


@pytest.mark.parametrize("processes", [2, 5])
def test_processes_released_together_audit_each_change_exactly_once(
    processes: int, sync_env: EnvBuilder, database_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    env = sync_env(database_url, SYNC_LOCK_WAIT_SECONDS="10")
    gate = tmp_path / "go"
    waiter = (
        "import os, sys, time\n"
        "from sync.cli import main\n"
        "import sync.job, sync.wiring, sync.migrate\n"
        "open(sys.argv[1], 'w').close()\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.001)\n"
        "sys.exit(main(['once']))\n"
    )
    for step, snapshot in enumerate([many(40), many(40, tag=" v2")]):
        emulator.set_platforms(snapshot)
        gate.unlink(missing_ok=True)
        ready = [tmp_path / f"ready-{step}-{n}" for n in range(processes)]
        started = [
            subprocess.Popen(
                [sys.executable, "-c", waiter, str(flag)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for flag in ready
        ]
        wait_until(lambda: all(f.exists() for f in ready), what="every process ready")  # noqa: B023
        gate.touch()
        for process in started:
            _, stderr = process.communicate(timeout=60)
            assert process.returncode == 0, stderr
        assert counts(database_url) == (40, 40 * (step + 1))
    engine = create_engine(database_url)
    with engine.connect() as conn:
        per_platform = conn.execute(
            sa.select(platform_audit.c.action, sa.func.count()).group_by(
                platform_audit.c.platform_id, platform_audit.c.action
            )
        ).all()
    engine.dispose()
    assert {count for _, count in per_platform} == {1}
    assert sorted(statuses(database_url)).count("success") >= 2


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])  # SQLite: BEGIN IMMEDIATE
def test_a_writer_whose_lock_connection_died_cannot_audit_a_change_twice(
    backend: str, sync_env: EnvBuilder, database_url: str, emulator: Emulator, tmp_path: Path
) -> None:
    """Process A holds the session lock and has read and diffed inside its write transaction
    when its lock connection is killed (a failover, an idle timeout); process B then gets the
    lock and fetches the same change. The fence in the write transaction makes B wait for A's
    commit and read it, so B finds nothing left to do. (Without it, B would write the change
    and A, resuming with its stale diff, would audit it a second time.)"""
    env = sync_env(database_url, SYNC_LOCK_WAIT_SECONDS="30")
    emulator.set_platforms(many(20))
    assert subprocess.run([*CLI, "once"], env=env, check=False).returncode == 0
    emulator.set_platforms(many(20, tag=" v2"))
    pause = PausePoint(tmp_path / "pause", "after_plan")
    admin = create_engine(database_url)
    try:
        with running(env | pause.env, "once") as a:
            pause.wait_reached()
            kill_lock_holder(admin, backend)
            with running(env, "once") as b:
                wait_until(
                    lambda: waiting_on_a_lock(admin, backend) or b.popen.poll() is not None,
                    what="B to wait for A (or to finish, if nothing fences it)",
                )
                pause.release()
                assert a.finish() == 0, a.stderr
                assert b.finish() == 0, b.stderr
    finally:
        admin.dispose()
    per_platform = Counter(
        (row.platform_id, row.action)
        for row in query(
            database_url, sa.select(platform_audit.c.platform_id, platform_audit.c.action)
        )
    )
    assert set(per_platform.values()) == {1}
    assert sorted(action for _, action in per_platform).count("update") == 20
    changes = query(
        database_url,
        sa.select(sync_runs.c.updated).where(sync_runs.c.status == "success").order_by("id"),
    )
    assert [row[0] for row in changes] == [0, 20, 0]  # first sync, A, B


def kill_lock_holder(admin: Engine, backend: str) -> None:
    """Kill the connection that holds the sync lock (the advisory lock / GET_LOCK)."""
    with admin.connect() as conn:
        if backend == "postgresql":
            (pid,) = conn.exec_driver_sql(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).scalars()
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        else:
            name = _mysql_name(admin.url.database, lock_name(PLATFORMS, "10000"))
            holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar_one()
            assert holder is not None
            conn.exec_driver_sql(f"KILL CONNECTION {int(holder)}")
        conn.commit()


def waiting_on_a_lock(admin: Engine, backend: str) -> bool:
    with admin.connect() as conn:
        if backend == "postgresql":
            waiting = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).scalar_one()
        else:
            # B's statement on the fence row, executing (blocked) for now.
            waiting = conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE() "
                "AND id <> CONNECTION_ID() AND command = 'Query' AND info LIKE '%%sync_state%%'"
            ).scalar_one()
    return int(waiting) > 0


# --------------------------------------------------------------------------- time


def test_timestamps_are_stored_in_utc_whatever_the_process_timezone(
    sync_env: EnvBuilder, backend: str, database_url: str, emulator: Emulator
) -> None:
    env = sync_env(database_url, TZ="Pacific/Kiritimati")  # UTC+14
    done = subprocess.run([*CLI, "once"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    now = datetime.now(UTC)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        for value in conn.execute(sa.select(platforms.c.first_seen_at)).scalars():
            assert value.tzinfo is not None
            assert abs((value - now).total_seconds()) < 120
        if backend == "sqlite":
            raw = conn.exec_driver_sql("SELECT started_at FROM sync_runs").scalar_one()
        elif backend == "mariadb":
            raw = conn.exec_driver_sql(
                "SELECT CAST(started_at AS CHAR) FROM sync_runs"
            ).scalar_one()
        else:
            raw = conn.exec_driver_sql(
                "SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                "FROM sync_runs"
            ).scalar_one()
    engine.dispose()
    stored = datetime.fromisoformat(str(raw)[:19]).replace(tzinfo=UTC)
    assert abs((stored - now).total_seconds()) < 120, f"stored {raw!r} is not UTC"


def test_a_wall_clock_jump_does_not_renew_the_token(database_url: str, tmp_path: Path) -> None:
    """Renewal follows the monotonic clock; stored timestamps follow the (UTC) wall clock."""
    import time_machine

    emulator_process = subprocess.Popen(
        [*CLI, "emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert emulator_process.stdout is not None
        url = emulator_process.stdout.readline().split()[3]
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            _secrets_dir=None,
            client_id=DEFAULT_CLIENT_ID,
            email=DEFAULT_EMAIL,
            password=SecretStr(DEFAULT_PASSWORD),
            auth_url=f"{url}/oauth/token",
            api_url=f"{url}/v4",
            database_url=database_url,
        )
        engine = build_engine(settings)
        client = build_client(settings, engine)
        assert run_once(engine, client, cycle_options(settings)).status == "success"
        jump = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
        with time_machine.travel(jump, tick=True):
            second = run_once(engine, client, cycle_options(settings))
        assert second.status == "success"
        assert client.tokens.requests_by_grant == {"password": 1}
        with engine.connect() as conn:
            last = conn.execute(
                sa.select(sync_runs.c.started_at).order_by(sync_runs.c.id.desc()).limit(1)
            ).scalar_one()
        engine.dispose()
        assert last.tzinfo is not None and abs((last - jump).total_seconds()) < 120
    finally:
        emulator_process.send_signal(signal.SIGTERM)
        emulator_process.communicate(timeout=10)
