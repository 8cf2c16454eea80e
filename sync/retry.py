"""Which HTTP failures are retried, and how long to wait: one decision function, no I/O.

The clock and the random source come in as arguments, so tests drive time by hand.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Protocol

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# A server asking for more than this is treated as "not today": fail fast, never sleep for hours.
RETRY_AFTER_CAP_SECONDS = 60.0


class Failure(Enum):
    """What went wrong with one attempt, as far as retrying is concerned."""

    CONNECT = "connect"  # nothing was sent: refused, DNS, connect timeout
    SEND_OR_READ = (
        "read"  # the request may have reached the server: reset, read timeout, truncation
    )
    SERVER = "server"  # 5xx
    RATE_LIMITED = "rate_limited"  # 429
    CLIENT = "client"  # other 4xx


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    base_seconds: float = BACKOFF_BASE_SECONDS
    max_seconds: float = BACKOFF_MAX_SECONDS
    retry_after_cap_seconds: float = RETRY_AFTER_CAP_SECONDS


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_seconds: float = 0.0
    reason: str = ""


class StopSignal(Protocol):
    """A stop request and when, on the monotonic clock, work in flight must be done."""

    @property
    def requested(self) -> bool: ...

    def cutoff(self) -> float:
        """math.inf until a stop is requested."""
        ...


class Deadline:
    """A point on a monotonic clock that a whole cycle must finish by.

    After a stop request the point moves to the stop's cutoff, if that is sooner: a cycle in
    flight carries on, but nothing it does (a retry wait, a request) may outlive the budget.

    Time spent waiting for the shared rate budget does not count (see paused): such a wait is
    the budget's pacing, not a stall, and a list with more sites than the budget serves within
    the timeout must still complete instead of failing the same sites every cycle.
    """

    def __init__(
        self,
        seconds: float,
        clock: Callable[[], float],
        stop: StopSignal | None = None,
    ) -> None:
        self._clock = clock
        self._at = clock() + seconds
        self._stop = stop
        # The union of the intervals in which some thread waits for the budget (per-site
        # requests wait side by side): one wait of two threads at once counts once.
        self._lock = threading.Lock()
        self._waiting = 0
        self._paused_since = 0.0
        self._paused = 0.0

    @property
    def stopping(self) -> bool:
        """A stop was requested: a failure now is the stop's doing, not the API's."""
        return self._stop is not None and self._stop.requested

    def remaining(self) -> float:
        with self._lock:
            now = self._clock()
            paused = self._paused + (now - self._paused_since if self._waiting else 0.0)
        at = self._at + paused
        if self._stop is not None:
            at = min(at, self._stop.cutoff())
        return max(0.0, at - now)

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """While inside, the deadline does not come closer (a stop's cutoff still does)."""
        with self._lock:
            if self._waiting == 0:
                self._paused_since = self._clock()
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
                if self._waiting == 0:
                    self._paused += self._clock() - self._paused_since


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    # isascii: str.isdigit() also accepts "²" (a latin-1 header byte), which float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_epoch)


def backoff_seconds(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential backoff with full jitter (attempt counts from 1)."""
    ceiling = min(policy.max_seconds, policy.base_seconds * 2 ** (attempt - 1))
    return rng.uniform(0, ceiling)


def decide(
    failure: Failure,
    *,
    attempt: int,
    policy: RetryPolicy,
    idempotent: bool,
    remaining_seconds: float,
    retry_after_seconds: float | None,
    rng: random.Random,
) -> Decision:
    """Whether attempt number `attempt` (from 1) that failed with `failure` gets another go."""
    # Other 4xx: the same request will get the same answer.
    if failure is Failure.CLIENT:
        return Decision(False, reason="client error")
    # A POST that may have reached the server is not repeated (the token endpoint may count it).
    if failure is Failure.SEND_OR_READ and not idempotent:
        return Decision(False, reason="request may have been processed")
    if attempt > policy.retries:
        return Decision(False, reason=f"gave up after {attempt} attempts")
    delay = backoff_seconds(attempt, policy, rng)
    # 429/503 may say when to come back: honour it when it is reasonable, else stop asking.
    if retry_after_seconds is not None and failure in (Failure.RATE_LIMITED, Failure.SERVER):
        if retry_after_seconds > policy.retry_after_cap_seconds:
            return Decision(
                False,
                reason=f"server asked to wait {retry_after_seconds:.0f}s (cap "
                f"{policy.retry_after_cap_seconds:.0f}s)",
            )
        delay = max(delay, retry_after_seconds)
    # Never sleep past the cycle's deadline: the next cycle will try again.
    if delay >= remaining_seconds:
        return Decision(False, reason="cycle deadline reached")
    return Decision(True, delay_seconds=delay)


def auth_pause_seconds(refusals: int, *, interval_seconds: float, cap_seconds: float) -> float:
    """How long a credential set waits after its `refusals`-th refusal in a row (from 1).

    One interval after the first, doubling with each further one, capped: a wrong password
    costs a handful of failed logins a day, never one per cycle.
    """
    doublings = min(max(refusals, 1) - 1, 62)  # 2**62 intervals already exceeds any cap
    return min(cap_seconds, interval_seconds * float(2**doublings))
