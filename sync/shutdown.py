"""Stopping on SIGTERM/SIGINT without throwing away work, and without outliving the budget.

After a stop request no new cycle starts. A cycle in flight carries on, so a request that would
be answered in milliseconds is not abandoned, but nothing may outlive `budget_seconds`: retry
waits that would are not taken, and at the cutoff the requests still in flight are cut (the
transports abort their sockets). A cycle cut short is recorded as `interrupted`, never as a
failure of the API. Should a cycle still be running shortly after the cutoff (a database
statement that does not return), the process exits anyway and the database rolls back.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# How long after the cutoff a cut cycle gets to roll back and record itself.
ABORT_GRACE_SECONDS = 2.0


class Shutdown:
    """The stop request shared by the signal handler, the cycles and their transports."""

    def __init__(self, budget_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_seconds = budget_seconds
        self._clock = clock
        self._event = threading.Event()
        self._cutoff = math.inf
        self.reason = ""

    def request(self, reason: str) -> None:
        """Ask everything to stop; the first request starts the budget."""
        if not self._event.is_set():
            self.reason = reason
            self._cutoff = self._clock() + self.budget_seconds
            self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def cutoff(self) -> float:
        return self._cutoff

    def remaining(self) -> float:
        return max(0.0, self._cutoff - self._clock())

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a stop request; True once there is one."""
        return self._event.wait(timeout)

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, but not past the cutoff of a stop requested meanwhile."""
        until = self._clock() + seconds
        if not self._event.wait(max(0.0, until - self._clock())):
            return
        # A stop came (before or during the wait): sleep on, up to its cutoff at most.
        while (left := min(until, self._cutoff) - self._clock()) > 0:
            time.sleep(left)


def supervise(
    work: Callable[[], Any],
    shutdown: Shutdown,
    abort: Callable[[], None],
    *,
    exit_code: int,
) -> Any:
    """Run `work` in a thread while this (main) thread stays free for signal handlers.

    Returns what `work` returned, or raises what it raised. Past the stop's cutoff, `abort`
    cuts what is in flight; past the grace after that, the process exits with `exit_code`.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the main thread below
            outcome["error"] = error

    thread = threading.Thread(target=target, name="cycle", daemon=True)
    thread.start()
    wait_for(thread.is_alive, thread.join, shutdown, abort, exit_code=exit_code)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def wait_for(
    busy: Callable[[], bool],
    join: Callable[[float], object],
    shutdown: Shutdown,
    abort: Callable[[], None],
    *,
    exit_code: int,
) -> None:
    """Wait while `busy()`; enforce the stop's cutoff with `abort`, then with an exit."""
    while busy():
        join(min(0.2, shutdown.remaining()) if shutdown.requested else 0.2)
        if busy() and shutdown.requested and shutdown.remaining() <= 0:
            log.warning(
                "the cycle in flight did not finish within %.0fs of the stop; cutting it",
                shutdown.budget_seconds,
            )
            abort()
            join(ABORT_GRACE_SECONDS)
            if busy():
                # A database statement that does not return: leave now; the server rolls
                # back the open transaction when our connection drops.
                log.error("the cycle in flight is stuck; exiting without it")
                logging.shutdown()
                os._exit(exit_code)
            return
