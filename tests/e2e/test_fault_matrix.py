"""The fault matrix: each fault the API or the token endpoint can throw at a cycle, on every
database. For each: the cycle's status and exit code, the run row closed with an error, and
platforms/platform_audit untouched on failure. The loop's survival is proven in test_service."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from sync.emulator import DEFAULT_CLIENT_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD, Emulator, Fault
from sync.job import RunResult, run_once
from sync.schema import platform_audit, platforms, sync_runs
from sync.settings import Settings
from sync.wiring import build_client, cycle_options

from ..conftest import FakeClock, settings_for

pytestmark = [pytest.mark.e2e, pytest.mark.db]

Setup = Callable[[Emulator], None]


@dataclass(frozen=True)
class Row:
    """One row of the matrix: what the emulator does, and what the cycle must end as."""

    name: str
    setup: Setup
    status: str
    exit_code: int
    error: str = ""  # a fragment the one-line error must contain
    settings: tuple[tuple[str, Any], ...] = ()


def fault(endpoint: str, times: int | None = 1, **kwargs: Any) -> Setup:
    return lambda emu: emu.inject(endpoint, Fault(**kwargs), times=times)


def raw(body: bytes, content_type: str = "application/json") -> Setup:
    return fault("platforms", kind="raw", body=body, content_type=content_type)


def real_token_response(drop: str = "", **override: Any) -> Setup:
    """A genuine token from the emulator, re-served with a field dropped or changed."""

    def setup(emu: Emulator) -> None:
        grant = requests.post(
            emu.auth_url,
            data={
                "grant_type": "password",
                "client_id": DEFAULT_CLIENT_ID,
                "email": DEFAULT_EMAIL,
                "password": DEFAULT_PASSWORD,
            },
            timeout=5,
        ).json()
        grant.pop(drop, None)
        grant.update(override)
        emu.inject("token", Fault(kind="raw", body=json.dumps(grant).encode()))

    return setup


MATRIX = [
    # --- the platform list endpoint ---------------------------------------------------------
    Row("5xx then success", fault("platforms", kind="status", status=503), "success", 0),
    Row(
        "5xx forever",
        fault("platforms", None, kind="status", status=500),
        "failed",
        75,
        "HTTP 500",
    ),
    Row(
        "429 with a short Retry-After",
        fault("platforms", kind="status", status=429, retry_after="1"),
        "success",
        0,
    ),
    Row(
        "429 with an absurd Retry-After fails fast",
        fault("platforms", None, kind="status", status=429, retry_after="86400"),
        "failed",
        75,
        "asked to wait",
    ),
    Row(
        "read timeout",
        fault("platforms", None, kind="delay", delay_seconds=3),
        "failed",
        75,
        "read timeout",
        (("http_timeout_seconds", 0.5),),
    ),
    Row(
        "slow drip past the cycle deadline",
        fault("platforms", None, kind="drip", delay_seconds=0.2),
        "failed",
        75,
        "deadline",
        (("cycle_timeout_seconds", 1.5),),
    ),
    Row("connection reset mid-body, once", fault("platforms", kind="reset_mid_body"), "success", 0),
    Row(
        "connection reset mid-body, always",
        fault("platforms", None, kind="reset_mid_body"),
        "failed",
        75,
        "GET /v4/global/platforms",
    ),
    Row(
        "connection reset before the response, always",
        fault("platforms", None, kind="reset_before_response"),
        "failed",
        75,
        "connection",
    ),
    Row("truncated body, once", fault("platforms", kind="truncated"), "success", 0),
    Row(
        "truncated body, always",
        fault("platforms", None, kind="truncated"),
        "failed",
        75,
        "cut short",
    ),
    Row(
        "malformed JSON", fault("platforms", kind="malformed_json"), "failed", 65, "not valid JSON"
    ),
    Row("HTML with 200", fault("platforms", kind="html"), "failed", 65, "text/html"),
    Row(
        "wrong Content-Type",
        fault("platforms", kind="wrong_content_type"),
        "failed",
        65,
        "text/plain",
    ),
    Row("object instead of array", fault("platforms", kind="object"), "failed", 65, "JSON array"),
    Row(
        "wrong types",
        fault("platforms", kind="wrong_types"),
        "failed",
        65,
        "expected a 64-bit integer",
    ),
    Row("missing fields", fault("platforms", kind="missing_fields"), "failed", 65, "required"),
    Row("identical duplicate ids", fault("platforms", kind="duplicate_identical"), "success", 0),
    Row(
        "conflicting duplicate ids",
        fault("platforms", kind="duplicate_conflict"),
        "failed",
        65,
        "appears twice",
    ),
    Row("non-UTF-8 bytes", fault("platforms", kind="non_utf8"), "failed", 65, "UTF-8"),
    Row(
        "NUL character in a name",
        raw(b'[{"id": 1, "name": "a\\u0000b"}]'),
        "failed",
        65,
        "NUL",
    ),
    Row(
        "lone surrogate in a name",
        raw(b'[{"id": 1, "name": "a\\ud800b"}]'),
        "failed",
        65,
        "surrogate",
    ),
    Row(
        "answer beyond the response cap",
        fault("platforms", kind="big", size_bytes=50 * 1024 * 1024),
        "failed",
        65,
        "exceeds the cap",
    ),
    Row("403 is not retried", fault("platforms", kind="status", status=403), "failed", 65, "403"),
    # --- the token endpoint -----------------------------------------------------------------
    Row("token endpoint 5xx then success", fault("token", kind="status", status=502), "success", 0),
    Row(
        "token endpoint 5xx forever",
        fault("token", None, kind="status", status=503),
        "failed",
        75,
        "HTTP 503",
    ),
    Row(
        "token response without expires_in",
        real_token_response(drop="expires_in"),
        "success",
        0,
    ),
    Row(
        "token response with a wrong token_type",
        real_token_response(token_type="mac"),
        "failed",
        65,
        "not Bearer",
    ),
    Row(
        "token response that is not JSON",
        fault("token", kind="html"),
        "failed",
        65,
        "token",
    ),
]


@pytest.fixture
def harness(
    database_url: str, emulator: Emulator
) -> Iterator[Callable[..., tuple[RunResult, Engine]]]:
    from sync.wiring import build_engine

    engines: list[Engine] = []

    def make(**overrides: Any) -> tuple[RunResult, Engine]:
        settings = settings_for(
            emulator, database_url, **({"http_retries": 2, "lock_wait_seconds": 1} | overrides)
        )
        engine = build_engine(settings)
        engines.append(engine)
        return run_once(engine, build_client(settings, engine), cycle_options(settings)), engine

    yield make
    for engine in engines:
        engine.dispose()


def tables(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        return (
            conn.execute(sa.select(platforms).order_by(platforms.c.id)).all(),
            conn.execute(sa.select(platform_audit).order_by(platform_audit.c.id)).all(),
        )


@pytest.mark.parametrize("row", MATRIX, ids=[row.name for row in MATRIX])
def test_fault(
    row: Row, harness: Callable[..., tuple[RunResult, Engine]], emulator: Emulator
) -> None:
    first, engine = harness()
    assert first.status == "success"
    emulator.set_platforms([{"id": 100, "name": "US renamed"}, {"id": 200, "name": "EU"}])
    before = tables(engine)
    row.setup(emulator)
    started = time.monotonic()
    result, _ = harness(**dict(row.settings))
    elapsed = time.monotonic() - started

    assert (result.status, result.exit_code) == (row.status, row.exit_code), result.error
    assert elapsed < 15, "no fault may hold a cycle past its deadline"
    with engine.connect() as conn:
        last = conn.execute(sa.select(sync_runs).order_by(sync_runs.c.id.desc())).first()
    assert last is not None and last.status == row.status
    assert last.finished_at is not None
    if row.status == "failed":
        assert tables(engine) == before, "a failed cycle must leave the tables as they were"
        assert row.error in str(result.error)
        assert last.error and "\n" not in last.error and row.error in last.error
    else:
        assert last.error is None
        assert last.updated == 1 and last.deleted == 1


def test_wrong_credentials_fail_with_77_after_one_token_request(
    harness: Callable[..., tuple[RunResult, Engine]], emulator: Emulator
) -> None:
    result, engine = harness(password="not-the-password")
    assert (result.status, result.exit_code) == ("failed", 77)
    assert "invalid_grant" in str(result.error)
    assert len([r for r in emulator.requests if r.path == "/oauth/token"]) == 1
    assert tables(engine) == ([], [])


def test_unknown_client_fails_with_77(
    harness: Callable[..., tuple[RunResult, Engine]], emulator: Emulator, database_url: str
) -> None:
    settings = settings_for(emulator, database_url, client_id="someone-else")
    from sync.wiring import build_engine

    engine = build_engine(settings)
    result = run_once(engine, build_client(settings, engine), cycle_options(settings))
    engine.dispose()
    assert (result.status, result.exit_code) == ("failed", 77)
    assert "invalid_client" in str(result.error)


def test_a_closed_port_fails_with_75_quickly(database_url: str) -> None:
    import socket

    from sync.wiring import build_engine

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        _secrets_dir=None,
        client_id="c",
        email="e",
        password=SecretStr("p"),
        auth_url=f"http://127.0.0.1:{port}/oauth/token",
        api_url=f"http://127.0.0.1:{port}/v4",
        database_url=database_url,
        http_retries=1,
    )
    engine = build_engine(settings)
    started = time.monotonic()
    result = run_once(engine, build_client(settings, engine), cycle_options(settings))
    engine.dispose()
    assert (result.status, result.exit_code) == ("failed", 75)
    assert "connection failed" in str(result.error)
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- token life cycle


@pytest.fixture
def two_cycles(database_url: str) -> Iterator[Callable[..., tuple[RunResult, RunResult]]]:
    """Two cycles with one client (as the loop has), around something done to the emulator."""
    from sync.wiring import build_engine

    engines: list[Engine] = []

    def run(
        emulator: Emulator, between: Callable[[FakeClock], object]
    ) -> tuple[RunResult, RunResult]:
        """`between` may advance the client's clock, as the loop's interval wait would."""
        settings = settings_for(emulator, database_url)
        engine = build_engine(settings)
        engines.append(engine)
        clock = FakeClock()
        client = build_client(settings, engine, monotonic=clock)
        first = run_once(engine, client, cycle_options(settings), monotonic=clock)
        between(clock)
        return first, run_once(engine, client, cycle_options(settings), monotonic=clock)

    yield run
    for engine in engines:
        engine.dispose()


def test_a_token_expiring_between_cycles_is_renewed_with_the_refresh_grant(
    two_cycles: Callable[..., tuple[RunResult, RunResult]],
) -> None:
    with Emulator(rate_limit=None, token_lifetime_seconds=600) as emulator:
        first, second = two_cycles(emulator, lambda clock: clock.advance(600))
        stats = emulator.stats
    assert first.status == second.status == "success"
    assert (stats["token_password"], stats["token_refresh"]) == (1, 1)
    assert stats["platforms_unauthorized"] == 0, "renewed before expiry, not after a 401"


def test_a_token_revoked_mid_run_costs_one_renewal_and_one_retry(
    two_cycles: Callable[..., tuple[RunResult, RunResult]], emulator: Emulator
) -> None:
    first, second = two_cycles(emulator, lambda _: emulator.revoke_tokens())
    stats = emulator.stats
    assert first.status == second.status == "success"
    assert stats["platforms_unauthorized"] == 1
    assert (stats["token_password"], stats["token_refresh"]) == (1, 1)


def test_a_rejected_refresh_token_falls_back_to_the_password_grant(
    two_cycles: Callable[..., tuple[RunResult, RunResult]], emulator: Emulator
) -> None:
    def revoke_everything(_: FakeClock) -> None:
        emulator.revoke_refresh_tokens()
        emulator.revoke_tokens()

    first, second = two_cycles(emulator, revoke_everything)
    stats = emulator.stats
    assert first.status == second.status == "success"
    assert stats["token_rejected"] == 1
    assert stats["token_password"] == 2
