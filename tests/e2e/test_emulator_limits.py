"""Latency and the rate limit: lower bounds on time only, and a fake clock where time matters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import requests

from sync.emulator import Emulator
from sync.emulator.ratelimit import RateLimiter
from tests.e2e.test_emulator import TIMEOUT, control, get_platforms, password_form, token_request
from tests.e2e.test_emulator_lists import OPEN, Api, site_path

pytestmark = pytest.mark.e2e

LATENCY_SECONDS = 0.15


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- latency ------------------------------------------------------------------------------


def timed(send: Callable[[], object]) -> float:
    started = time.monotonic()
    send()
    return time.monotonic() - started


def test_every_api_request_takes_at_least_the_latency() -> None:
    with Emulator(latency_seconds=LATENCY_SECONDS, rate_limit=None) as emu:
        api = Api(emu)
        durations = [
            timed(lambda: token_request(emu, password_form())),
            timed(lambda: api.get(site_path("agents", OPEN))),
            timed(lambda: api.get("/global/nowhere")),
        ]
    assert all(duration >= LATENCY_SECONDS for duration in durations), durations


def test_latency_is_settable_while_serving_and_spares_control_requests() -> None:
    with Emulator(rate_limit=None) as emu:
        emu.latency_seconds = LATENCY_SECONDS
        assert timed(lambda: get_platforms(emu)) >= LATENCY_SECONDS
        control(emu, "PUT", "latency", json={"seconds": 2 * LATENCY_SECONDS}).raise_for_status()
        assert emu.latency_seconds == 2 * LATENCY_SECONDS
        assert timed(lambda: get_platforms(emu)) >= 2 * LATENCY_SECONDS
        control(emu, "GET", "stats").raise_for_status()  # no latency, no assertion on time


def test_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="latency"):
        Emulator(latency_seconds=-1)
    with Emulator() as emu:
        assert control(emu, "PUT", "latency", json={"seconds": -1}).status_code == 400


def test_stop_cuts_a_long_latency_short() -> None:
    emu = Emulator(latency_seconds=600).start()
    outcome: list[object] = []
    client = threading.Thread(
        target=lambda: outcome.append(_swallow(lambda: get_platforms(emu))), daemon=True
    )
    try:
        client.start()
        # Recorded before the latency starts; no gate can tell that (gates come after it).
        assert wait_until(lambda: bool(emu.requests)), "the request reached the emulator"
    finally:
        emu.stop()
    client.join(TIMEOUT)
    assert not client.is_alive()
    assert outcome


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll `condition` until true or `timeout`; a bounded wait for a state, not a guessed delay."""
    deadline = time.monotonic() + timeout
    poll = threading.Event()
    while not condition():
        if time.monotonic() >= deadline:
            return False
        poll.wait(0.01)
    return True


def _swallow(send: Callable[[], object]) -> object:
    try:
        return send()
    except requests.RequestException as exc:
        return exc


# -- rate limit ---------------------------------------------------------------------------


def test_set_rate_limit_applies_at_once_with_retry_after_in_whole_seconds() -> None:
    with Emulator(rate_limit=None) as emu:
        assert {get_platforms(emu).status_code for _ in range(5)} == {401}
        emu.set_rate_limit(2, 30)
        statuses = [get_platforms(emu).status_code for _ in range(3)]
        limited = get_platforms(emu)
        stats = emu.stats
        emu.set_rate_limit(None, 30)
        after = get_platforms(emu).status_code
    assert statuses == [401, 401, 429]
    assert limited.status_code == 429
    assert limited.headers["Retry-After"].isdigit()
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert "2 calls per 30 seconds" in limited.json()["error_description"]
    assert stats["rate_limited"] == 2
    assert after == 401


def test_token_requests_share_the_per_ip_budget() -> None:
    with Emulator(rate_limit=2, rate_window_seconds=60) as emu:
        assert token_request(emu, password_form()).status_code == 200
        assert token_request(emu, password_form()).status_code == 200
        assert get_platforms(emu).status_code == 429
        assert token_request(emu, password_form()).status_code == 429
        assert emu.stats["rate_limited"] == 2


def test_control_rate_limit_changes_the_limit() -> None:
    with Emulator(rate_limit=None) as emu:
        body = {"limit": 1, "window_seconds": 60}
        control(emu, "PUT", "rate-limit", json=body).raise_for_status()
        assert [get_platforms(emu).status_code for _ in "ab"] == [401, 429]
        control(emu, "PUT", "rate-limit", json={"limit": None}).raise_for_status()
        assert get_platforms(emu).status_code == 401
        assert control(emu, "PUT", "rate-limit", json={"limit": 0}).status_code == 400
        assert control(emu, "PUT", "rate-limit", json={"limit": "5"}).status_code == 400


def test_set_rate_limit_refuses_nonsense() -> None:
    emu = Emulator()
    with pytest.raises(ValueError):
        emu.set_rate_limit(0, 60)
    with pytest.raises(ValueError):
        emu.set_rate_limit(5, 0)


def test_retry_after_is_rounded_up_to_whole_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 2.5, clock=clock)
    assert limiter.acquire("a") is None
    clock.now += 0.1
    assert limiter.acquire("a") == 3  # 2.4 s to wait
    clock.now += 1.5
    assert limiter.acquire("a") == 1  # 0.9 s to wait
    assert limiter.acquire("b") is None, "each address has its own budget"
    clock.now += 0.9
    assert limiter.acquire("a") is None, "waiting Retry-After seconds is enough"


def test_reconfiguring_the_limiter_keeps_the_calls_already_counted() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 60, clock=clock)
    assert [limiter.acquire("a") for _ in range(2)] == [None, None]
    limiter.configure(2, 60)
    assert limiter.acquire("a") == 60
    limiter.configure(2, 10)
    clock.now += 10
    assert limiter.acquire("a") is None
