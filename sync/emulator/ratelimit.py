"""Per-IP sliding-window rate limit, as the Partner API documents it (300 calls per 5 minutes)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from sync.emulator.replies import Reply, error_reply


class RateLimiter:
    """Admits at most `limit` calls per `window_seconds` for each client address; thread-safe."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError("rate limit and window must be positive")
        self._limit = limit
        self._window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: dict[str, deque[float]] = {}

    def configure(self, limit: int, window_seconds: float) -> None:
        """Change the limit and the window; calls already counted count against the new ones."""
        if limit < 1 or window_seconds <= 0:
            raise ValueError("rate limit and window must be positive")
        with self._lock:
            self._limit, self._window_seconds = limit, window_seconds

    def acquire(self, address: str) -> int | None:
        """Count a call from `address`: None if admitted, else whole seconds until a slot frees."""
        now = self._clock()
        with self._lock:
            calls = self._calls.setdefault(address, deque())
            while calls and calls[0] <= now - self._window_seconds:
                calls.popleft()
            if len(calls) < self._limit:
                calls.append(now)
                return None
            # Rounded up: a client that waits exactly Retry-After seconds must get through.
            return max(1, math.ceil(calls[0] + self._window_seconds - now))


def too_many_requests(limit: int, window_seconds: float, retry_after: int) -> Reply:
    """The 429 answer, with Retry-After in whole seconds (what acquire() returned)."""
    description = f"rate limit of {limit} calls per {window_seconds:g} seconds exceeded"
    headers = (("Retry-After", str(retry_after)),)
    return error_reply(429, "too_many_requests", description, headers=headers)
