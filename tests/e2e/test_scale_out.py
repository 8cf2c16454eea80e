"""Scale-out, end to end on every database: several accounts in one process, one rate budget
shared by every replica (counted at the emulator, which enforces its own limit), a 429 that
pauses everyone, replicas that share the work, and a replica killed without losing any."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.emulator import Emulator, Fault
from sync.resources import REGISTRY
from sync.schema import sync_auth_state, sync_runs

from ..conftest import CLI
from .helpers import Process, query, running, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.db, pytest.mark.slow]

EnvBuilder = Callable[..., dict[str, str]]
GLOBEX = {"client_id": "globex-client", "email": "ops@globex.example", "password": "globex-pw"}


def once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "once"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def accounts_env(env: dict[str, str], acme_password: str = "demo-password") -> dict[str, str]:
    """Two accounts: acme (the emulator's first partner, 10000) and globex (20000)."""
    return env | {
        "SYNC_ACCOUNTS": "acme,globex",
        "SYNC_ACME__CLIENT_ID": "demo-client",
        "SYNC_ACME__EMAIL": "demo@example.com",
        "SYNC_ACME__PASSWORD": acme_password,
        "SYNC_ACME__PARTNER_ID": "10000",
        "SYNC_GLOBEX__CLIENT_ID": GLOBEX["client_id"],
        "SYNC_GLOBEX__EMAIL": GLOBEX["email"],
        "SYNC_GLOBEX__PASSWORD": GLOBEX["password"],
        "SYNC_GLOBEX__PARTNER_ID": "20000",
        "SYNC_GLOBEX__RESOURCES": "platforms,sites",
    }


@pytest.fixture
def globex(emulator: Emulator) -> Emulator:
    emulator.add_partner(
        "20000", **GLOBEX, data={"platforms": [{"id": 7, "name": "Globex"}], "sites": []}
    )
    return emulator


def runs_of(url: str) -> list[Any]:
    return query(
        url,
        sa.select(
            sync_runs.c.partner_id,
            sync_runs.c.resource,
            sync_runs.c.status,
            sync_runs.c.started_at,
            sync_runs.c.finished_at,
        ).order_by(sync_runs.c.id),
    )


# --------------------------------------------------------------------------- accounts


def test_two_accounts_in_one_process_get_separate_rows_and_runs(
    sync_env: EnvBuilder, database_url: str, globex: Emulator
) -> None:
    done = once(accounts_env(sync_env(database_url)))

    assert done.returncode == 0, done.stderr
    platforms = REGISTRY["platforms"].table
    rows = query(database_url, sa.select(platforms.c.partner_id, platforms.c.name))
    assert sorted(rows) == [("10000", "AU"), ("10000", "EU"), ("10000", "US"),
                            ("20000", "Globex")]  # fmt: skip
    assert sorted((p, r, s) for p, r, s, *_ in runs_of(database_url)) == [
        ("10000", "platforms", "success"),
        ("20000", "platforms", "success"),
        ("20000", "sites", "success"),
    ]
    logins = query(database_url, sa.select(sync_auth_state.c.account, sync_auth_state.c.partner_id))
    assert sorted(logins) == [("acme", "10000"), ("globex", "20000")]


def test_one_accounts_refused_password_does_not_stop_the_other(
    sync_env: EnvBuilder, database_url: str, globex: Emulator
) -> None:
    done = once(accounts_env(sync_env(database_url), acme_password="wrong"))

    assert done.returncode == 77  # the most severe of the two accounts
    outcome = {(p, r): s for p, r, s, *_ in runs_of(database_url)}
    assert outcome == {
        ("10000", "platforms"): "failed",
        ("20000", "platforms"): "success",
        ("20000", "sites"): "success",
    }


def test_accounts_can_come_from_a_secrets_directory(
    sync_env: EnvBuilder, database_url: str, globex: Emulator, tmp_path: Path
) -> None:
    """As a Kubernetes Secret mounts them: SYNC_ACCOUNTS and each account's settings as files."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    env = sync_env(database_url) | {"SYNC_SECRETS_DIR": str(secrets)}
    for name, value in accounts_env({}).items():
        (secrets / name).write_text(value + "\n")

    done = once(env)

    assert done.returncode == 0, done.stderr
    assert {p for p, *_ in runs_of(database_url)} == {"10000", "20000"}


# --------------------------------------------------------------------------- the budget


@contextmanager
def replicas(env: dict[str, str], count: int) -> Iterator[list[Process]]:
    with ExitStack() as stack:
        yield [stack.enter_context(running(env)) for _ in range(count)]


def request_times(emulator: Emulator) -> list[float]:
    return sorted(r.timestamp for r in emulator.requests)


def window_counts(times: list[float], seconds: float, start: float, end: float) -> list[int]:
    """The calls in each `seconds`-long window that starts at a call between start and end."""
    return [
        sum(1 for t in times if at <= t < at + seconds)
        for at in times
        if start <= at and at + seconds <= end
    ]


def test_replicas_share_one_budget_without_a_429_and_use_most_of_it(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator
) -> None:
    """The emulator enforces 20 calls per 3 s per address; the replicas share 18 per 3 s, with
    more work than that waiting: never a 429, never more than 18 in any window, at least 80 %
    of it used in every window once the budget has filled up."""
    emulator.populate(sites=40, per_site=2)
    emulator.set_rate_limit(20, 3.0)
    env = sync_env(
        database_url,
        SYNC_RESOURCES="sites,agents",
        SYNC_RATE_LIMIT="18/3",
        SYNC_INTERVAL_SECONDS="1",
        SYNC_CYCLE_TIMEOUT_SECONDS="60",
    )
    with replicas(env, 3) as processes:
        wait_until(lambda: len(emulator.requests) >= 18, timeout=60, what="the budget to fill")
        filled = request_times(emulator)[17]
        wait_until(lambda: time.time() > filled + 10, timeout=30, what="three windows of work")
        stopped = time.time()
        for process in processes:
            process.signal()
        codes = [process.finish() for process in processes]
    assert codes == [0, 0, 0], [p.stderr[-2000:] for p in processes]
    assert emulator.stats["rate_limited"] == 0
    times = request_times(emulator)
    assert max(window_counts(times, 3.0, times[0], times[-1] + 3)) <= 18
    busy = window_counts(times, 3.0, filled, stopped - 0.5)
    assert busy and min(busy) >= 0.8 * 18, busy


def test_a_429_pauses_every_replica_until_its_retry_after(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator
) -> None:
    emulator.populate(sites=30, per_site=2)
    env = sync_env(
        database_url,
        SYNC_RESOURCES="sites,agents",
        SYNC_RATE_LIMIT="100/1",
        SYNC_INTERVAL_SECONDS="1",
        SYNC_CYCLE_TIMEOUT_SECONDS="60",
    )
    with replicas(env, 3) as processes:
        wait_until(lambda: emulator.count_requests("/v4/global/sites/200") >= 10, what="fan-out")
        emulator.inject("agents", Fault(kind="status", status=429, retry_after="2"))
        wait_until(lambda: emulator.stats["agents_fault"] == 1, what="the 429")
        limited = time.time()
        wait_until(lambda: time.time() > limited + 3.5, timeout=10, what="the pause to pass")
        for process in processes:
            process.signal()
        codes = [process.finish() for process in processes]
    assert codes == [0, 0, 0]
    after = [r.timestamp for r in emulator.requests if r.timestamp > limited]
    # Nothing from any replica between half a second after the 429 and its Retry-After.
    assert not [t for t in after if limited + 0.5 < t < limited + 1.9], after[:5]
    assert any(t >= limited + 1.9 for t in after)  # and then work resumed


# --------------------------------------------------------------------------- sharing the work


def overlaps(spans: list[tuple[datetime, datetime]]) -> bool:
    spans = sorted(spans)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_three_replicas_sync_each_list_once_per_interval_between_them(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator
) -> None:
    env = sync_env(
        database_url, SYNC_RESOURCES="platforms,sites,products,plans", SYNC_INTERVAL_SECONDS="1"
    )
    with replicas(env, 3) as processes:
        wait_until(
            lambda: sum(1 for run in runs_of(database_url) if run[2] == "success") >= 16,
            timeout=60,
            what="four rounds",
        )
        for process in processes:
            process.signal()
        codes = [process.finish() for process in processes]
    assert codes == [0, 0, 0]
    runs = runs_of(database_url)
    for name in ("platforms", "sites", "products", "plans"):
        done = [(start, end) for _, resource, status, start, end in runs
                if resource == name and status == "success"]  # fmt: skip
        assert not overlaps(done), name
        statuses = [status for _, resource, status, *_ in runs if resource == name]
        assert set(statuses) <= {"success", "skipped", "interrupted"}
        # One GET per cycle between the three replicas, not one each.
        cycles = sum(1 for status in statuses if status != "skipped")
        assert emulator.count_requests(f"/v4{REGISTRY[name].path}") == cycles, name


def test_a_killed_replica_leaves_no_list_behind(
    sync_env: EnvBuilder, database_url: str, emulator: Emulator
) -> None:
    env = sync_env(
        database_url, SYNC_RESOURCES="platforms,sites,products,plans", SYNC_INTERVAL_SECONDS="1"
    )
    names = ("platforms", "sites", "products", "plans")
    with replicas(env, 3) as processes:
        wait_until(lambda: len(runs_of(database_url)) >= 8, timeout=60, what="two rounds")
        processes[0].popen.send_signal(signal.SIGKILL)
        processes[0].finish()
        killed_at = datetime.now(UTC)

        def fresh() -> bool:
            done = {resource for _, resource, status, start, _ in runs_of(database_url)
                    if status == "success" and start > killed_at}  # fmt: skip
            return done >= set(names)

        # Within an interval (and a tick, and the claim the dead one held).
        wait_until(fresh, timeout=10, what="every list synced again after the kill")
        for process in processes[1:]:
            process.signal()
        assert [process.finish() for process in processes[1:]] == [0, 0]
