"""The retry policy: which failures get another attempt, how long to wait, and the deadline."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from sync.retry import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    RETRY_AFTER_CAP_SECONDS,
    Deadline,
    Decision,
    Failure,
    RetryPolicy,
    auth_pause_seconds,
    backoff_seconds,
    decide,
    parse_retry_after,
)

POLICY = RetryPolicy(retries=3)
NOW_EPOCH = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def decision(
    failure: Failure,
    *,
    attempt: int = 1,
    idempotent: bool = True,
    remaining_seconds: float = 300.0,
    retry_after_seconds: float | None = None,
    policy: RetryPolicy = POLICY,
) -> Decision:
    return decide(
        failure,
        attempt=attempt,
        policy=policy,
        idempotent=idempotent,
        remaining_seconds=remaining_seconds,
        retry_after_seconds=retry_after_seconds,
        rng=random.Random(0),
    )


# --------------------------------------------------------------------------- what is retried


@pytest.mark.parametrize(
    ("failure", "idempotent", "retried"),
    [
        (Failure.CONNECT, True, True),
        (Failure.CONNECT, False, True),  # nothing was sent: safe even for the token POST
        (Failure.SEND_OR_READ, True, True),
        (Failure.SEND_OR_READ, False, False),  # the POST may have been processed
        (Failure.SERVER, True, True),
        (Failure.SERVER, False, True),
        (Failure.RATE_LIMITED, True, True),
        (Failure.RATE_LIMITED, False, True),
        (Failure.CLIENT, True, False),
        (Failure.CLIENT, False, False),
    ],
)
def test_which_failures_are_retried(failure: Failure, idempotent: bool, retried: bool) -> None:
    result = decision(failure, idempotent=idempotent)

    assert result.retry is retried
    if not retried:
        assert result.reason


def test_non_idempotent_send_failure_says_the_request_may_have_been_processed() -> None:
    result = decision(Failure.SEND_OR_READ, idempotent=False)

    assert result.reason == "request may have been processed"


def test_the_last_allowed_retry_is_granted() -> None:
    assert decision(Failure.SERVER, attempt=3).retry


def test_attempts_exhausted_after_the_configured_retries() -> None:
    result = decision(Failure.SERVER, attempt=4)

    assert not result.retry
    assert result.reason == "gave up after 4 attempts"


def test_zero_retries_means_a_single_attempt() -> None:
    assert not decision(Failure.SERVER, attempt=1, policy=RetryPolicy(retries=0)).retry


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize("failure", [Failure.RATE_LIMITED, Failure.SERVER])
def test_retry_after_is_honoured(failure: Failure) -> None:
    result = decision(failure, retry_after_seconds=2.0)

    assert result.retry
    assert result.delay_seconds == 2.0


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    policy = RetryPolicy(retries=10, base_seconds=4.0)
    backoff = backoff_seconds(3, policy, random.Random(0))

    result = decision(Failure.RATE_LIMITED, attempt=3, retry_after_seconds=0.0, policy=policy)

    assert result.delay_seconds == backoff > 0


def test_retry_after_at_the_cap_is_still_honoured() -> None:
    result = decision(Failure.RATE_LIMITED, retry_after_seconds=RETRY_AFTER_CAP_SECONDS)

    assert result.retry
    assert result.delay_seconds == RETRY_AFTER_CAP_SECONDS


def test_retry_after_above_the_cap_fails_fast() -> None:
    result = decision(Failure.RATE_LIMITED, retry_after_seconds=3600.0, remaining_seconds=10_000)

    assert not result.retry
    assert result.reason == "server asked to wait 3600s (cap 60s)"


def test_retry_after_beyond_the_deadline_gives_up() -> None:
    result = decision(Failure.RATE_LIMITED, retry_after_seconds=30.0, remaining_seconds=20.0)

    assert not result.retry
    assert result.reason == "cycle deadline reached"


def test_backoff_never_sleeps_past_the_deadline() -> None:
    assert not decision(Failure.SERVER, remaining_seconds=0.0).retry


# --------------------------------------------------------------------------- backoff


def test_backoff_stays_within_its_exponential_ceiling() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 12):
        ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        samples = [backoff_seconds(attempt, POLICY, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)


def test_backoff_grows_with_the_attempt_number() -> None:
    rng = random.Random(42)
    longest = {
        attempt: max(backoff_seconds(attempt, POLICY, rng) for _ in range(200))
        for attempt in (1, 3, 5)
    }

    assert longest[1] <= BACKOFF_BASE_SECONDS < longest[3] <= 4 * BACKOFF_BASE_SECONDS < longest[5]


def test_backoff_is_capped_however_many_attempts() -> None:
    rng = random.Random(7)
    samples = [backoff_seconds(20, POLICY, rng) for _ in range(200)]

    assert max(samples) <= BACKOFF_MAX_SECONDS
    assert max(samples) > BACKOFF_MAX_SECONDS / 2


def test_backoff_is_jittered() -> None:
    rng = random.Random(3)

    assert len({backoff_seconds(4, POLICY, rng) for _ in range(20)}) == 20


def test_the_granted_delay_is_the_jittered_backoff() -> None:
    result = decision(Failure.SERVER, attempt=2)

    assert result.delay_seconds == backoff_seconds(2, POLICY, random.Random(0))
    assert 0.0 <= result.delay_seconds <= 2 * BACKOFF_BASE_SECONDS


# --------------------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(("value", "seconds"), [("2", 2.0), (" 120 ", 120.0), ("0", 0.0)])
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW_EPOCH) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = datetime.fromtimestamp(NOW_EPOCH + 30, UTC)

    assert parse_retry_after(format_datetime(later, usegmt=True), NOW_EPOCH) == 30.0


def test_retry_after_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW_EPOCH) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "soon",
        "-1",
        "1.5",
        "Wed, 99 Foo 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00 -0000",  # no time zone: cannot be placed in time
        "\xb2",  # a latin-1 superscript two: str.isdigit() says yes, float() says no
    ],
)
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW_EPOCH) is None


# --------------------------------------------------------------------------- Deadline


def test_deadline_counts_down_with_the_clock(clock) -> None:
    deadline = Deadline(10.0, clock)

    assert deadline.remaining() == 10.0
    clock.advance(4.0)
    assert deadline.remaining() == 6.0
    assert not deadline.expired()


def test_deadline_expires_and_never_goes_negative(clock) -> None:
    deadline = Deadline(10.0, clock)

    clock.advance(10.0)
    assert deadline.expired()
    clock.advance(5.0)
    assert deadline.remaining() == 0.0


def test_a_stop_moves_the_deadline_to_its_cutoff(clock) -> None:
    from sync.shutdown import Shutdown

    stop = Shutdown(budget_seconds=8.0, clock=clock)
    deadline = Deadline(300.0, clock, stop)
    assert not deadline.stopping and deadline.remaining() == 300.0

    clock.advance(10.0)
    stop.request("SIGTERM")

    assert deadline.stopping
    assert deadline.remaining() == 8.0  # the cycle goes on, within the stop's budget
    clock.advance(8.0)
    assert deadline.expired()


def test_a_stop_never_extends_the_deadline(clock) -> None:
    from sync.shutdown import Shutdown

    stop = Shutdown(budget_seconds=60.0, clock=clock)
    deadline = Deadline(5.0, clock, stop)
    stop.request("SIGTERM")

    assert deadline.remaining() == 5.0


def test_time_paused_for_the_budget_does_not_count_and_overlapping_pauses_count_once(
    clock,
) -> None:
    deadline = Deadline(10.0, clock)
    clock.advance(2.0)
    with deadline.paused():  # one thread waits 5 s for the budget...
        clock.advance(3.0)
        with deadline.paused():  # ...another joins it for the last 2 s
            clock.advance(2.0)
            assert deadline.remaining() == 8.0
    clock.advance(1.0)

    assert deadline.remaining() == 7.0  # 10 s, less the 3 s not spent waiting


def test_a_pause_never_holds_off_a_stops_cutoff(clock) -> None:
    from sync.shutdown import Shutdown

    stop = Shutdown(budget_seconds=8.0, clock=clock)
    deadline = Deadline(300.0, clock, stop)
    stop.request("SIGTERM")
    with deadline.paused():
        clock.advance(5.0)
        assert deadline.remaining() == 3.0


# --------------------------------------------------------------------------- auth pause


@pytest.mark.parametrize(
    ("refusals", "expected"),
    [(1, 300), (2, 600), (3, 1200), (7, 19200), (8, 21600), (1000, 21600)],
)
def test_the_auth_pause_starts_at_one_interval_and_doubles_up_to_the_cap(
    refusals: int, expected: float
) -> None:
    assert auth_pause_seconds(refusals, interval_seconds=300, cap_seconds=21600) == expected
