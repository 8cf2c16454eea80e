"""A refused password is never retried into an account lock; tokens outlive a process; the
partner identity is pinned. The measure is the number of token requests the emulator saw."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from sync.auth import Credentials, SavedToken
from sync.emulator import DEFAULT_CLIENT_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD, Emulator, Fault
from sync.schema import platform_audit, platforms, sync_auth_state, sync_runs, sync_token_cache
from sync.store import create_engine
from sync.token_cache import SealedTokenCache

from ..conftest import CLI
from .helpers import free_port, running, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.db]

EnvBuilder = Callable[..., dict[str, str]]
CACHE_KEY = "k3Y-for-tests-0123456789abcdefghijklmnop"
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def once(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "once", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def token_requests(emulator: Emulator) -> list[str]:
    """The grant type of every token request the emulator received, in order."""
    return [r.form.get("grant_type", "?") for r in emulator.requests if r.path == "/oauth/token"]


def select(url: str, statement: sa.Executable) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement).all())
    finally:
        engine.dispose()


def count(url: str, table: sa.Table) -> int:
    return int(select(url, sa.select(sa.func.count()).select_from(table))[0][0])


@pytest.fixture
def env(sync_env: EnvBuilder, database_url: str) -> dict[str, str]:
    return sync_env(database_url)


# --------------------------------------------------------------------------- the pause


def test_five_once_processes_with_a_wrong_password_send_one_password_grant(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    env["SYNC_PASSWORD"] = "not-the-password"
    started = datetime.now(UTC)

    results = [once(env) for _ in range(5)]

    assert [r.returncode for r in results] == [77] * 5, results[-1].stderr
    assert token_requests(emulator) == ["password"]
    assert "invalid_grant" in results[0].stderr
    for later in results[1:]:
        (shown,) = UTC_TIME.findall(later.stderr)
        resume = datetime.strptime(shown, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        # SYNC_INTERVAL_SECONDS (300 by default) after the refusal.
        assert timedelta(seconds=295) < resume - started < timedelta(seconds=330)
        assert "--force-auth" in later.stderr
    (state,) = select(database_url, sa.select(sync_auth_state))
    assert state.refusals == 1 and state.error == "invalid_grant"
    assert "not-the-password" not in str(tuple(state))
    assert count(database_url, platforms) == count(database_url, platform_audit) == 0


def test_a_changed_password_is_tried_at_once(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert once(env | {"SYNC_PASSWORD": "wrong-1"}).returncode == 77
    assert once(env | {"SYNC_PASSWORD": "wrong-2"}).returncode == 77  # another set: tried
    assert once(env | {"SYNC_PASSWORD": "wrong-2"}).returncode == 77  # now paused
    assert token_requests(emulator) == ["password", "password"]

    fixed = once(env)  # the right password

    assert fixed.returncode == 0, fixed.stderr
    assert token_requests(emulator) == ["password"] * 3
    (state,) = select(database_url, sa.select(sync_auth_state))
    assert (state.refusals, state.next_attempt_at, state.partner_id) == (0, None, "10000")


def test_force_auth_ignores_the_pause_and_a_further_refusal_doubles_it(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    env["SYNC_PASSWORD"] = "not-the-password"
    assert once(env).returncode == 77
    assert once(env).returncode == 77
    assert token_requests(emulator) == ["password"]

    before = datetime.now(UTC)
    forced = once(env, "--force-auth")

    assert forced.returncode == 77
    assert token_requests(emulator) == ["password", "password"]
    (state,) = select(database_url, sa.select(sync_auth_state))
    assert state.refusals == 2
    assert timedelta(seconds=595) < state.next_attempt_at - before < timedelta(seconds=630)


def test_the_pause_doubles_and_is_capped(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    env |= {"SYNC_PASSWORD": "not-the-password", "SYNC_AUTH_BACKOFF_MAX_SECONDS": "1000"}
    waits = []
    for _ in range(4):
        before = datetime.now(UTC)
        assert once(env, "--force-auth").returncode == 77
        (state,) = select(database_url, sa.select(sync_auth_state))
        waits.append(round((state.next_attempt_at - before).total_seconds(), -1))
    assert waits == [300, 600, 1000, 1000]
    assert len(token_requests(emulator)) == 4


def test_a_loop_with_a_wrong_password_waits_longer_after_each_refusal(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    port = free_port()
    env |= {
        "SYNC_PASSWORD": "not-the-password",
        "SYNC_INTERVAL_SECONDS": "0.4",
        "SYNC_METRICS_PORT": str(port),
        "SYNC_METRICS_HOST": "127.0.0.1",
    }
    with running(env) as process:
        wait_until(lambda: len(token_requests(emulator)) >= 4, timeout=30, what="4 refusals")
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        live = requests.get(f"http://127.0.0.1:{port}/livez", timeout=5)
        code, _ = process.stop()
    assert code == 0, process.stderr
    times = [r.timestamp for r in emulator.requests if r.path == "/oauth/token"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # One interval, then two, then four: not one refusal per 0.4 s tick.
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8 and gaps[2] >= 1.6, gaps
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("comm100_sync_auth_paused", (("account", "default"),))] == 1
    assert live.status_code == 200  # the outage is not the pod's fault: no restart
    status = subprocess.run(
        [*CLI, "status"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert status.returncode == 1
    assert "paused: account default" in status.stdout


# --------------------------------------------------------------------------- the token cache


def test_ten_once_processes_with_the_cache_key_make_one_token_request(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    env["SYNC_TOKEN_CACHE_KEY"] = CACHE_KEY

    codes = [once(env).returncode for _ in range(10)]

    assert codes == [0] * 10
    assert token_requests(emulator) == ["password"]
    assert count(database_url, sync_token_cache) == 1


def test_without_the_cache_key_every_once_logs_in_and_no_token_is_kept(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    assert [once(env).returncode for _ in range(3)] == [0, 0, 0]

    assert token_requests(emulator) == ["password"] * 3
    assert count(database_url, sync_token_cache) == 0


def test_a_cached_token_near_expiry_is_renewed_with_the_refresh_grant(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    env["SYNC_TOKEN_CACHE_KEY"] = CACHE_KEY
    assert once(env).returncode == 0
    engine = create_engine(database_url)
    cache = SealedTokenCache(
        engine, Credentials(DEFAULT_CLIENT_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD), CACHE_KEY
    )
    saved = cache.load()
    assert saved is not None and saved.refresh_token
    # Age the kept token to its last minute, as if the 12 hours had passed.
    cache.save(SavedToken(saved.access_token, saved.refresh_token, time.time() - 43170, 43200))
    engine.dispose()

    assert once(env).returncode == 0
    assert once(env).returncode == 0

    assert token_requests(emulator) == ["password", "refresh_token"]


@pytest.mark.parametrize("change", ["rotated key", "tampered row", "other password"])
def test_a_cached_token_that_cannot_be_trusted_means_a_fresh_grant(
    change: str, env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    env["SYNC_TOKEN_CACHE_KEY"] = CACHE_KEY
    assert once(env).returncode == 0
    if change == "rotated key":
        env["SYNC_TOKEN_CACHE_KEY"] = CACHE_KEY[::-1]
    elif change == "tampered row":
        engine = create_engine(database_url)
        with engine.begin() as conn:
            sealed = conn.execute(sa.select(sync_token_cache.c.sealed)).scalar_one()
            flipped = sealed[:40] + ("A" if sealed[40] != "A" else "B") + sealed[41:]
            conn.execute(sa.update(sync_token_cache).values(sealed=flipped))
        engine.dispose()
    else:
        emulator.set_password("a-new-password")
        env["SYNC_PASSWORD"] = "a-new-password"

    done = once(env)

    assert done.returncode == 0, done.stderr
    assert token_requests(emulator) == ["password", "password"]


# --------------------------------------------------------------------------- partner identity


@pytest.fixture
def token_for_partner(emulator: Emulator) -> Iterator[Callable[[str | None], None]]:
    """Make the token endpoint issue tokens whose partnerId claim is `partner` (None: none)."""
    import base64
    import json

    def issue(partner: str | None) -> None:
        claims = {"sub": "u"} | ({"partnerId": partner} if partner else {})
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        body = {"access_token": f"e30.{payload}.c2ln", "token_type": "Bearer", "expires_in": 60}
        emulator.inject("token", Fault("raw", body=json.dumps(body).encode()), times=None)

    yield issue
    emulator.clear_faults()


def test_credentials_of_another_partner_exit_77_and_write_nothing(
    env: dict[str, str],
    emulator: Emulator,
    database_url: str,
    token_for_partner: Callable[[str | None], None],
) -> None:
    token_for_partner("10000")

    done = once(env | {"SYNC_PARTNER_ID": "20000"})

    assert done.returncode == 77
    assert "credentials belong to partner 10000" in done.stderr
    assert count(database_url, platforms) == count(database_url, platform_audit) == 0
    assert select(database_url, sa.select(sync_runs.c.status, sync_runs.c.partner_id)) == [
        ("failed", "20000")
    ]
    assert emulator.stats["platforms_ok"] == 0


def test_no_partner_id_and_no_claim_exits_78_and_writes_nothing(
    env: dict[str, str],
    emulator: Emulator,
    database_url: str,
    token_for_partner: Callable[[str | None], None],
) -> None:
    token_for_partner(None)

    done = once(env)

    assert done.returncode == 78
    assert "set SYNC_PARTNER_ID" in done.stderr
    assert count(database_url, platforms) == count(database_url, platform_audit) == 0
    assert count(database_url, sync_runs) == 0
    assert emulator.stats["platforms_ok"] == 0


def test_rows_and_failures_are_filed_under_the_same_partner(
    env: dict[str, str], emulator: Emulator, database_url: str
) -> None:
    """Failures before a token go under the partner of the last accepted login, never ''."""
    assert once(env).returncode == 0
    emulator.inject("token", Fault(kind="status", status=503), times=None)
    assert once(env).returncode == 75
    emulator.clear_faults()
    assert once(env).returncode == 0

    partners = select(database_url, sa.select(sync_runs.c.status, sync_runs.c.partner_id))
    assert partners == [("success", "10000"), ("failed", "10000"), ("success", "10000")]
    assert {row.partner_id for row in select(database_url, sa.select(platforms))} == {"10000"}
