"""One HTTP exchange with retries: requests/urllib3 failures translated into our errors.

Reads bodies with a size cap and checks the cycle deadline between reads, so a slow-drip
server cannot hold a cycle past SYNC_CYCLE_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
import urllib3
import urllib3.connection
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from sync import __version__, tracing
from sync.errors import InterruptedCycleError, PayloadError, UnavailableError
from sync.retry import Deadline, Failure, RetryPolicy, decide, parse_retry_after

log = logging.getLogger(__name__)

USER_AGENT = f"comm100-sync/{__version__}"
READ_CHUNK_BYTES = 256 * 1024
CONNECT_TIMEOUT_CAP_SECONDS = 10.0


class Budget(Protocol):
    """The API's rate budget (sync.store.budget.SharedBudget): every request takes a slot."""

    def reserve(self) -> float:
        """0.0 when a slot was taken; else the seconds to wait before asking again."""
        ...

    def pause(self, seconds: float) -> None:
        """A 429: every process holds its requests for `seconds`."""
        ...


# A 429 without a Retry-After pauses everyone this long.
DEFAULT_429_PAUSE_SECONDS = 60.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class _AttemptFailed(Exception):
    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


def endpoint_of(url: str) -> str:
    """Method-free label for messages: the URL path only (queries may carry ids)."""
    return urlsplit(url).path or "/"


def _classify(exc: Exception) -> _AttemptFailed:
    """Map a requests/urllib3 exception to a retry category and a short, secret-free text."""
    if isinstance(exc, requests.exceptions.SSLError):
        # Certificate problems do not heal by retrying; report them as such.
        return _AttemptFailed(Failure.CLIENT, "TLS verification failed")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _AttemptFailed(Failure.CONNECT, "connect timeout")
    if isinstance(exc, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError):
        return _AttemptFailed(Failure.SEND_OR_READ, "read timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        inner = getattr(reason, "reason", reason)
        if isinstance(
            inner, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
        ):
            return _AttemptFailed(Failure.CONNECT, "connection failed")
        return _AttemptFailed(Failure.SEND_OR_READ, "connection lost")
    if isinstance(
        exc,
        requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError
        | urllib3.exceptions.ProtocolError
        | urllib3.exceptions.DecodeError
        | ConnectionError
        | socket.timeout,
    ):
        return _AttemptFailed(Failure.SEND_OR_READ, "response cut short")
    raise exc


class Transport:
    """Sends requests on one requests.Session with timeouts, bounded retries and a body cap."""

    def __init__(
        self,
        session: requests.Session,
        *,
        policy: RetryPolicy,
        timeout_seconds: float,
        max_response_bytes: int,
        sleep: Callable[[float], object] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sockets: OpenSockets | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.session = session
        self.sockets = sockets
        self.budget = budget
        self.session.headers["User-Agent"] = USER_AGENT
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self.request_count = 0

    def abort(self) -> None:
        """Cut the requests in flight (a shutdown past its budget); see OpenSockets."""
        if self.sockets is not None and self.sockets.abort():
            log.info("cut the HTTP requests in flight")

    def request(
        self,
        method: str,
        url: str,
        *,
        deadline: Deadline,
        idempotent: bool,
        template: str | None = None,
        **kwargs: Any,
    ) -> HttpResponse:
        """Send until a non-retryable answer arrives; return it, whatever its status.

        Each attempt is a span named after `template` (the path with placeholders, as
        `/v4/global/sites/{siteId}/agents`), else the method alone.

        Raises:
            UnavailableError: connection failures, timeouts, 5xx or 429 after the retries.
            PayloadError: the body is larger than the response cap.
        """
        label = f"{method} {endpoint_of(url)}"
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            status: int | None = None
            try:
                response = self._attempt(method, url, deadline, attempt, template, **kwargs)
            except _AttemptFailed as failed:
                failure, detail = failed.failure, failed.detail
            else:
                status = response.status
                if status < 500 and status != 429:
                    return response
                failure = Failure.RATE_LIMITED if status == 429 else Failure.SERVER
                detail = f"HTTP {status}"
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), self._wall_clock()
                )
                if status == 429 and self.budget is not None:
                    # Every process sharing the budget holds its requests, not just this one.
                    self.budget.pause(retry_after or DEFAULT_429_PAUSE_SECONDS)
            decision = decide(
                failure,
                attempt=attempt,
                policy=self.policy,
                idempotent=idempotent,
                remaining_seconds=deadline.remaining(),
                retry_after_seconds=retry_after,
                rng=self._rng,
            )
            if not decision.retry:
                if deadline.stopping:
                    raise InterruptedCycleError(
                        f"{label}: stopped before an answer arrived ({detail}); "
                        "nothing was committed"
                    )
                raise UnavailableError(
                    f"{label}: {detail} ({decision.reason})",
                    endpoint=endpoint_of(url),
                    status=status,
                )
            log.warning(
                "%s: %s; retry %d of %d in %.2fs",
                label,
                detail,
                attempt,
                self.policy.retries,
                decision.delay_seconds,
            )
            self._sleep(decision.delay_seconds)

    def _take_slot(self, label: str, url: str, deadline: Deadline) -> None:
        """Wait for a slot of the shared rate budget; the wait does not eat the cycle's deadline
        (Deadline.paused), but a stop's cutoff still bounds it."""
        if self.budget is None:
            return
        while (wait := self.budget.reserve()) > 0:
            if deadline.stopping and wait >= deadline.remaining():
                raise InterruptedCycleError(
                    f"{label}: stopped while waiting for the rate budget; nothing was committed"
                )
            log.debug("%s: waiting %.2fs for the rate budget", label, wait)
            with deadline.paused():
                self._sleep(wait)

    def _attempt(
        self,
        method: str,
        url: str,
        deadline: Deadline,
        attempt: int,
        template: str | None,
        **kwargs: Any,
    ) -> HttpResponse:
        self._take_slot(f"{method} {endpoint_of(url)}", url, deadline)
        remaining = deadline.remaining()
        if remaining <= 0:
            # Nothing was sent, so even a POST could go again; decide() sees no time left.
            raise _AttemptFailed(Failure.CONNECT, "cycle deadline reached")
        read_timeout = min(self.timeout_seconds, remaining)
        connect_timeout = min(read_timeout, CONNECT_TIMEOUT_CAP_SECONDS)
        self.request_count += 1
        with tracing.span(
            f"{method} {template}" if template else method,
            _span_attributes(method, url, attempt, template),
            kind="client",
        ) as span:
            try:
                with self.session.request(
                    method,
                    url,
                    stream=True,
                    timeout=(connect_timeout, read_timeout),
                    allow_redirects=False,
                    **kwargs,
                ) as response:
                    status = response.status_code
                    span.set({"http.response.status_code": status})
                    if status >= 400:
                        span.fail(str(status), f"HTTP {status}")
                    body = self._read_body(response, url, deadline)
                    return HttpResponse(status, response.headers, body)
            except _AttemptFailed as failed:
                span.fail("timeout", failed.detail)
                raise
            except (
                requests.exceptions.RequestException,
                urllib3.exceptions.HTTPError,
                OSError,
            ) as exc:
                translated = _classify(exc)
                span.fail(type(exc).__name__, translated.detail)
                raise translated from exc

    def _read_body(self, response: requests.Response, url: str, deadline: Deadline) -> bytes:
        cap = self.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise PayloadError(
                f"{endpoint_of(url)}: response of {int(declared)} bytes exceeds the cap of {cap}",
                endpoint=endpoint_of(url),
                status=response.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        raw = response.raw
        while True:
            if deadline.expired():
                raise _AttemptFailed(Failure.SEND_OR_READ, "cycle deadline reached mid-body")
            # read1 returns whatever one recv() brings, so the deadline is checked often even
            # against a server that drips a byte at a time.
            chunk = raw.read1(READ_CHUNK_BYTES, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                raise PayloadError(
                    f"{endpoint_of(url)}: response exceeds the cap of {cap} bytes",
                    endpoint=endpoint_of(url),
                    status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _span_attributes(
    method: str, url: str, attempt: int, template: str | None
) -> dict[str, str | int | None]:
    """An attempt's span attributes (HTTP semantic conventions): the path, never the query."""
    parts = urlsplit(url)
    return {
        "http.request.method": method,
        "url.scheme": parts.scheme,
        "url.path": parts.path or "/",
        "url.template": template,
        "server.address": parts.hostname,
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        # Set on retries only, as the conventions say.
        "http.request.resend_count": attempt - 1 if attempt > 1 else None,
    }


class OpenSockets:
    """The sockets of this transport's connections, so a shutdown can cut requests in flight.

    A request blocked in a read has no other way out before its timeout: shutting its socket
    down wakes it with an error, which the cycle then reports as interrupted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    def add(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.add(sock)

    def discard(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.discard(sock)

    def abort(self) -> int:
        """Shut every open connection down; returns how many there were."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(sockets)


def _tracking_adapter(sockets: OpenSockets, pool_size: int) -> HTTPAdapter:
    """An HTTPAdapter whose connections report their sockets to `sockets`."""

    class Tracked:
        sock: socket.socket | None

        def connect(self) -> None:
            super().connect()  # type: ignore[misc]
            sockets.add(self.sock)

        def close(self) -> None:
            sockets.discard(self.sock)
            super().close()  # type: ignore[misc]

    class HTTPConn(Tracked, urllib3.connection.HTTPConnection):
        pass

    class HTTPSConn(Tracked, urllib3.connection.HTTPSConnection):
        pass

    class HTTPPool(urllib3.HTTPConnectionPool):
        ConnectionCls = HTTPConn

    class HTTPSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = HTTPSConn

    pools = {"http": HTTPPool, "https": HTTPSPool}

    class Adapter(HTTPAdapter):
        # urllib3 lets each PoolManager override its pool classes ("so other PoolManagers can
        # override them"); SOCKS managers keep their own and are not tracked.
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if type(manager) is urllib3.ProxyManager:
                manager.pool_classes_by_scheme = pools
            return manager

    # A connection per concurrent request, kept for the next cycle.
    return Adapter(pool_connections=2, pool_maxsize=max(pool_size, 10))


def new_session(sockets: OpenSockets | None = None, *, pool_size: int = 10) -> requests.Session:
    """A Session with TLS verification on (never switched off) and the User-Agent set.

    With `sockets`, every connection's socket is tracked there (see OpenSockets.abort);
    `pool_size` connections per host are kept open (SYNC_HTTP_CONCURRENCY).
    """
    session = requests.Session()
    session.verify = True
    session.headers["User-Agent"] = USER_AGENT
    if sockets is not None:
        adapter = _tracking_adapter(sockets, pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
