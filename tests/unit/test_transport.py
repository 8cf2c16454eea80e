"""One HTTP exchange: retries and backoff on a fake clock, Retry-After, body cap, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
import requests

from sync.errors import InterruptedCycleError, PayloadError, UnavailableError
from sync.retry import BACKOFF_BASE_SECONDS, Deadline
from sync.shutdown import Shutdown
from sync.transport import USER_AGENT, Transport
from tests.unit.fake_partner_api import (
    AUTH_URL,
    PLATFORMS_URL,
    WALL_EPOCH,
    FakePartnerApi,
    connect_refused,
    dropped_after_send,
)

MakeTransport = Callable[..., Transport]


def get(transport: Transport, deadline: Deadline, url: str = PLATFORMS_URL):
    return transport.request("GET", url, deadline=deadline, idempotent=True)


def post(transport: Transport, deadline: Deadline):
    return transport.request("POST", AUTH_URL, deadline=deadline, idempotent=False, data={"a": 1})


# --------------------------------------------------------------------------- success


def test_answer_is_returned_with_status_headers_and_body(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock
) -> None:
    api.platforms(body=b'[{"id":1,"name":"a"}]', headers={"X-Request-Id": "r1"})

    response = get(make_transport(), deadline)

    assert response.status == 200
    assert response.body == b'[{"id":1,"name":"a"}]'
    assert response.headers["X-Request-Id"] == "r1"
    assert clock.sleeps == []


def test_requests_identify_the_client(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    api.platforms()

    get(make_transport(), deadline)

    (request,) = api.requests_to(PLATFORMS_URL)
    assert request.headers["User-Agent"] == USER_AGENT


def test_timeouts_are_bounded_by_the_setting_and_the_cycle_deadline(
    api: FakePartnerApi, make_transport: MakeTransport, clock
) -> None:
    api.platforms()

    get(make_transport(timeout_seconds=30.0), Deadline(20.0, clock))

    (call,) = api.mock.calls
    assert call.request.req_kwargs["timeout"] == (10.0, 20.0)


def test_redirects_are_not_followed(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    """A redirect must not carry the token or the password to another host."""
    api.platforms(status=302, headers={"Location": "https://elsewhere.example/steal"}, body=b"")

    assert get(make_transport(), deadline).status == 302
    assert len(api.mock.calls) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
def test_client_errors_are_returned_without_retrying(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock, status: int
) -> None:
    api.platforms(status=status, json={"message": "no"})

    assert get(make_transport(), deadline).status == status
    assert len(api.mock.calls) == 1
    assert clock.sleeps == []


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_then_success_is_retried_after_a_backoff_sleep(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock, status: int
) -> None:
    api.platforms(status=status, body=b"oops")
    api.platforms()

    assert get(make_transport(), deadline).status == 200
    assert len(api.mock.calls) == 2
    (slept,) = clock.sleeps
    assert 0.0 <= slept <= BACKOFF_BASE_SECONDS


def test_retries_used_up_raise_unavailable_with_endpoint_and_status(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock
) -> None:
    api.platforms(status=503, body=b"down")

    with pytest.raises(UnavailableError) as caught:
        get(make_transport(retries=3), deadline)

    error = caught.value
    assert (error.endpoint, error.status, error.exit_code) == ("/v4/global/platforms", 503, 75)
    assert str(error) == "GET /v4/global/platforms: HTTP 503 (gave up after 4 attempts)"
    assert len(api.mock.calls) == 4
    assert len(clock.sleeps) == 3
    ceilings = [BACKOFF_BASE_SECONDS * 2**n for n in range(3)]
    assert all(0.0 <= s <= c for s, c in zip(clock.sleeps, ceilings, strict=True))


def test_zero_retries_means_one_attempt(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock
) -> None:
    api.platforms(status=500)

    with pytest.raises(UnavailableError):
        get(make_transport(retries=0), deadline)

    assert len(api.mock.calls) == 1
    assert clock.sleeps == []


def test_retry_after_seconds_is_honoured(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock
) -> None:
    api.platforms(status=429, headers={"Retry-After": "2"}, body=b"")
    api.platforms()

    assert get(make_transport(), deadline).status == 200
    assert clock.sleeps == [2.0]


def test_retry_after_http_date_is_honoured(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock
) -> None:
    when = datetime.fromtimestamp(WALL_EPOCH + clock() + 5, UTC)
    api.platforms(status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    api.platforms()

    get(make_transport(), deadline)

    assert clock.sleeps == [5.0]


def test_retry_after_beyond_the_cap_fails_fast_without_sleeping(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, clock
) -> None:
    api.platforms(status=429, headers={"Retry-After": "3600"}, body=b"")

    with pytest.raises(UnavailableError) as caught:
        get(make_transport(), Deadline(10_000.0, clock))

    assert caught.value.status == 429
    assert "server asked to wait 3600s" in str(caught.value)
    assert len(api.mock.calls) == 1
    assert clock.sleeps == []


def test_retry_after_beyond_the_cycle_deadline_gives_up(
    api: FakePartnerApi, make_transport: MakeTransport, clock
) -> None:
    api.platforms(status=429, headers={"Retry-After": "30"}, body=b"")

    with pytest.raises(UnavailableError, match="cycle deadline reached"):
        get(make_transport(), Deadline(20.0, clock))

    assert clock.sleeps == []


def test_retries_stop_at_the_cycle_deadline(
    api: FakePartnerApi, make_transport: MakeTransport, clock
) -> None:
    """Never sleep past the deadline, however many retries are left."""
    api.platforms(status=503, headers={"Retry-After": "4"}, body=b"")

    with pytest.raises(UnavailableError, match="cycle deadline reached"):
        get(make_transport(retries=20), Deadline(10.0, clock))

    assert clock.sleeps == [4.0, 4.0]
    assert len(api.mock.calls) == 3


def test_after_a_stop_a_retry_wait_beyond_the_budget_is_not_taken(
    api: FakePartnerApi, make_transport: MakeTransport, clock
) -> None:
    stop = Shutdown(budget_seconds=8.0, clock=clock)

    def fail_and_stop(request: requests.PreparedRequest):
        stop.request("SIGTERM")
        return (503, {"Retry-After": "30"}, b"")

    api.mock.add_callback("GET", PLATFORMS_URL, callback=fail_and_stop)

    with pytest.raises(InterruptedCycleError, match="HTTP 503"):
        get(make_transport(), Deadline(300.0, clock, stop))

    assert len(api.mock.calls) == 1
    assert clock.sleeps == []


def test_after_a_stop_a_retry_within_the_budget_still_happens(
    api: FakePartnerApi, make_transport: MakeTransport, clock
) -> None:
    """A rolling deploy must not throw away a cycle that a short retry would finish."""
    stop = Shutdown(budget_seconds=8.0, clock=clock)
    answers = iter([(503, {"Retry-After": "1"}, b""), (200, {}, b"[]")])

    def answer(request: requests.PreparedRequest):
        stop.request("SIGTERM")
        return next(answers)

    api.mock.add_callback("GET", PLATFORMS_URL, callback=answer)

    response = get(make_transport(), Deadline(300.0, clock, stop))

    assert response.status == 200
    assert clock.sleeps == [1.0]


# --------------------------------------------------------------------------- connection failures


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(connect_refused(), id="connect-refused"),
        pytest.param(requests.exceptions.ConnectTimeout("connect timed out"), id="connect-timeout"),
        pytest.param(dropped_after_send(), id="dropped-after-send"),
        pytest.param(requests.exceptions.ReadTimeout("read timed out"), id="read-timeout"),
        pytest.param(requests.exceptions.ChunkedEncodingError("truncated"), id="truncated"),
    ],
)
def test_get_is_retried_after_any_connection_failure(
    api: FakePartnerApi,
    make_transport: MakeTransport,
    deadline: Deadline,
    clock,
    failure: Exception,
) -> None:
    api.platforms(body=failure)
    api.platforms()

    assert get(make_transport(), deadline).status == 200
    assert len(api.mock.calls) == 2
    assert len(clock.sleeps) == 1


def test_body_shorter_than_its_content_length_is_retried(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    api.platforms(body=b'[{"id":1,', headers={"Content-Length": "500"})
    api.platforms()

    response = get(make_transport(), deadline)

    assert response.body == b'[{"id": 1, "name": "Web"}]'
    assert len(api.mock.calls) == 2


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(connect_refused(), id="connect-refused"),
        pytest.param(requests.exceptions.ConnectTimeout("connect timed out"), id="connect-timeout"),
    ],
)
def test_post_is_retried_when_nothing_was_sent(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline, failure: Exception
) -> None:
    api.token_reply(body=failure)
    api.token_reply(json={})

    assert post(make_transport(), deadline).status == 200
    assert len(api.mock.calls) == 2


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(dropped_after_send(), id="dropped-after-send"),
        pytest.param(requests.exceptions.ReadTimeout("read timed out"), id="read-timeout"),
        pytest.param(requests.exceptions.ChunkedEncodingError("truncated"), id="truncated"),
    ],
)
def test_post_is_not_repeated_once_it_may_have_reached_the_server(
    api: FakePartnerApi,
    make_transport: MakeTransport,
    deadline: Deadline,
    clock,
    failure: Exception,
) -> None:
    api.token_reply(body=failure)

    with pytest.raises(UnavailableError) as caught:
        post(make_transport(), deadline)

    assert "request may have been processed" in str(caught.value)
    assert caught.value.endpoint == "/oauth/token"
    assert caught.value.status is None
    assert len(api.mock.calls) == 1
    assert clock.sleeps == []


def test_connection_failures_used_up_raise_unavailable(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    api.platforms(body=connect_refused())

    with pytest.raises(UnavailableError) as caught:
        get(make_transport(retries=2), deadline)

    assert str(caught.value) == (
        "GET /v4/global/platforms: connection failed (gave up after 3 attempts)"
    )
    assert len(api.mock.calls) == 3


def test_tls_failure_is_not_retried(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    api.platforms(body=requests.exceptions.SSLError("certificate verify failed"))

    with pytest.raises(UnavailableError, match="TLS verification failed"):
        get(make_transport(), deadline)

    assert len(api.mock.calls) == 1


# --------------------------------------------------------------------------- body size


def test_declared_content_length_above_the_cap_is_refused_without_retrying(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    api.platforms(body=b"[]", headers={"Content-Length": "2000000"})

    with pytest.raises(PayloadError) as caught:
        get(make_transport(max_response_bytes=1_000_000), deadline)

    assert str(caught.value) == (
        "/v4/global/platforms: response of 2000000 bytes exceeds the cap of 1000000"
    )
    assert caught.value.exit_code == 65
    assert len(api.mock.calls) == 1


def test_body_growing_past_the_cap_is_refused(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    api.platforms(body=b"x" * 4097)

    with pytest.raises(PayloadError, match="exceeds the cap of 4096 bytes"):
        get(make_transport(max_response_bytes=4096), deadline)


def test_body_exactly_at_the_cap_is_accepted(
    api: FakePartnerApi, make_transport: MakeTransport, deadline: Deadline
) -> None:
    api.platforms(body=b"x" * 4096)

    assert len(get(make_transport(max_response_bytes=4096), deadline).body) == 4096


# --------------------------------------------------------------------------- the rate budget


class ScriptedBudget:
    """A rate budget that answers reserve() with the waits given, then 0 (a slot)."""

    def __init__(self, *waits: float) -> None:
        self.waits = list(waits)
        self.paused: list[float] = []

    def reserve(self) -> float:
        return self.waits.pop(0) if self.waits else 0.0

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


def test_waiting_for_the_rate_budget_does_not_use_up_the_cycle_deadline(
    api: FakePartnerApi, make_transport: MakeTransport, clock
) -> None:
    """A list with more sites than the budget serves within SYNC_CYCLE_TIMEOUT_SECONDS must
    still complete: its budget waits are pacing, not a stall (else the same sites would fail
    every cycle)."""
    api.platforms()
    transport = make_transport()
    transport.budget = ScriptedBudget(20.0, 20.0, 20.0)
    deadline = Deadline(30.0, clock)

    response = get(transport, deadline)

    assert response.status == 200
    assert clock.sleeps == [20.0, 20.0, 20.0]
    assert deadline.remaining() == 30.0


def test_after_a_stop_a_budget_wait_beyond_the_cutoff_is_not_taken(
    api: FakePartnerApi, make_transport: MakeTransport, clock
) -> None:
    stop = Shutdown(budget_seconds=8.0, clock=clock)
    stop.request("SIGTERM")
    transport = make_transport()
    transport.budget = ScriptedBudget(20.0)

    with pytest.raises(InterruptedCycleError, match="waiting for the rate budget"):
        get(transport, Deadline(300.0, clock, stop))

    assert len(api.mock.calls) == 0
    assert clock.sleeps == []
