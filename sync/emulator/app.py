"""The Emulator: configuration, state (platforms, tokens, faults, stats) and request routing."""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from types import TracebackType

from sync.emulator.control import CONTROL_PREFIX, handle_control
from sync.emulator.faults import ANSWERS_NORMALLY, Fault, FaultQueue, fault_reply
from sync.emulator.handler import EmulatorServer, Incoming
from sync.emulator.ratelimit import RateLimiter
from sync.emulator.replies import Reply, dump_json, error_reply
from sync.emulator.tokens import TokenAuthority, parse_form

DEFAULT_CLIENT_ID = "demo-client"
DEFAULT_EMAIL = "demo@example.com"
DEFAULT_PASSWORD = "demo-password"
DEFAULT_PARTNER_ID = "10000"
DEFAULT_PLATFORMS: list[dict[str, object]] = [
    {"id": 100, "name": "US"},
    {"id": 200, "name": "EU"},
    {"id": 300, "name": "AU"},
]
TOKEN_PATH = "/oauth/token"
PLATFORMS_PATH = "/v4/global/platforms"
STAT_KEYS = (
    "token_password",
    "token_refresh",
    "token_rejected",
    "token_fault",
    "platforms_ok",
    "platforms_unauthorized",
    "platforms_fault",
    "rate_limited",
)
# Two waits (accept loop, then request threads) stay within the promised second.
STOP_TIMEOUT_SECONDS = 0.5
# Enough for any test; bounds the memory of an emulator left running for days.
MAX_RECORDED_REQUESTS = 100_000
_ROUTES = {TOKEN_PATH: ("token", "POST"), PLATFORMS_PATH: ("platforms", "GET")}


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the emulator saw it (control requests are not recorded)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]  # token requests only; the password shows as "***"
    timestamp: float
    client_ip: str


class Emulator:
    """A local stand-in for the Comm100 Partner API: token endpoint, platform list, faults.

    The /_emulator/ control endpoints (control=True) let anyone who can reach the port
    rewrite its answers: this is a test tool, to be bound to loopback, never exposed.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        email: str = DEFAULT_EMAIL,
        password: str = DEFAULT_PASSWORD,
        partner_id: str = DEFAULT_PARTNER_ID,
        token_lifetime_seconds: int = 43200,
        issue_refresh_tokens: bool = True,
        rotate_refresh_tokens: bool = False,
        rate_limit: int | None = 300,
        rate_window_seconds: float = 300.0,
        platforms: list[dict[str, object]] | None = None,
        control: bool = True,
    ) -> None:
        if token_lifetime_seconds < 0:
            raise ValueError("token_lifetime_seconds must not be negative")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.email = email
        self.password = password
        self.partner_id = partner_id
        self.control = control
        self.rate_limit = rate_limit
        self.rate_window_seconds = rate_window_seconds
        self._tokens = TokenAuthority(
            client_id=client_id,
            email=email,
            password=password,
            partner_id=partner_id,
            lifetime_seconds=token_lifetime_seconds,
            issue_refresh_tokens=issue_refresh_tokens,
            rotate_refresh_tokens=rotate_refresh_tokens,
        )
        self._limiter = None if rate_limit is None else RateLimiter(rate_limit, rate_window_seconds)
        self._faults = FaultQueue()
        self._lock = threading.Lock()
        self._platforms: list[dict[str, object]] = []
        self.set_platforms(DEFAULT_PLATFORMS if platforms is None else platforms)
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._requests: deque[RequestRecord] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self._stopping = threading.Event()
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Serve in a daemon thread; returns self. Calling it again while running is a no-op."""
        if self._thread is not None:
            return self
        self._stopping.clear()
        server = EmulatorServer((self.host, self.port), self._respond, self._stopping)
        port = server.server_port
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{shown}:{port}"
        self._tokens.issuer = self._url
        self._server = server
        self._thread = threading.Thread(target=server.run, name=f"emulator-{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving within about a second, even with slow answers in flight."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        # Wakes the delay and drip faults; closing the connections wakes idle keep-alive readers.
        self._stopping.set()
        server.wake()
        thread.join(STOP_TIMEOUT_SECONDS)
        server.close_connections()
        server.server_close()
        server.join_workers(STOP_TIMEOUT_SECONDS)

    def serve_forever(self) -> None:
        """Serve until stop() is called from another thread or the process gets SIGINT."""
        self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:8100"; known once started (the port may be 0)."""
        if self._url is None:
            raise RuntimeError("the emulator has not been started")
        return self._url

    @property
    def auth_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def api_url(self) -> str:
        return self.url + "/v4"

    # -- scripting -------------------------------------------------------------------------

    def set_platforms(self, platforms: list[dict[str, object]]) -> None:
        """Replace the platform list; objects are served as given, extra fields included."""
        dump_json(platforms)  # fail here, not on the next request, if it is not JSON
        with self._lock:
            self._platforms = copy.deepcopy(platforms)

    @property
    def platforms(self) -> list[dict[str, object]]:
        """A copy of the current platform list."""
        with self._lock:
            return copy.deepcopy(self._platforms)

    def inject(self, endpoint: str, fault: Fault, times: int | None = 1) -> None:
        """Queue a fault for the next `times` requests to "token" or "platforms" (None: all).

        Faults fire in FIFO order per endpoint, before the grant or the bearer token is checked.
        """
        self._faults.push(endpoint, fault, times)

    def clear_faults(self) -> None:
        self._faults.clear()

    def revoke_tokens(self) -> None:
        """Every access token issued so far gets 401; refresh tokens stay valid."""
        self._tokens.revoke_access()

    def revoke_refresh_tokens(self) -> None:
        self._tokens.revoke_refresh()

    def expire_tokens(self) -> None:
        """Every access token issued so far is treated as past its exp."""
        self._tokens.expire_access()

    # -- observation -----------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (keys: STAT_KEYS)."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = dict.fromkeys(STAT_KEYS, 0)

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the API requests seen so far (the latest 100,000), oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- serving ---------------------------------------------------------------------------

    def _respond(self, incoming: Incoming) -> Reply:
        if self.control and incoming.path.startswith(CONTROL_PREFIX):
            return handle_control(self, incoming)
        self._record(incoming)
        if self._limiter is not None:
            retry_after = self._limiter.acquire(incoming.client_ip)
            if retry_after is not None:
                self._count("rate_limited")
                description = (
                    f"rate limit of {self.rate_limit} calls per "
                    f"{self.rate_window_seconds:g} seconds exceeded"
                )
                headers = (("Retry-After", str(retry_after)),)
                return error_reply(429, "too_many_requests", description, headers=headers)
        route = _ROUTES.get(incoming.path)
        if route is None:
            return error_reply(404, "not_found", f"no such endpoint: {incoming.path}")
        endpoint, method = route
        if incoming.method != method:
            description = f"{incoming.path} accepts {method} only"
            return error_reply(405, "method_not_allowed", description, headers=(("Allow", method),))
        fault = self._faults.take(endpoint)
        if fault is None:
            return self._answer(endpoint, incoming)
        self._count(f"{endpoint}_fault")
        if fault.kind not in ANSWERS_NORMALLY:
            sample = self._tokens.sample_response() if endpoint == "token" else self.platforms
            return fault_reply(endpoint, fault, sample)
        if fault.kind == "delay":
            self._stopping.wait(fault.delay_seconds)
        reply = self._answer(endpoint, incoming)
        if fault.kind == "wrong_content_type":
            return replace(reply, content_type="text/plain; charset=utf-8")
        if fault.kind == "drip":
            return replace(reply, delivery="drip", delay_seconds=fault.delay_seconds)
        return reply

    def _answer(self, endpoint: str, incoming: Incoming) -> Reply:
        """What the real endpoint would answer."""
        if endpoint == "token":
            content_type = incoming.header("Content-Type")
            reply, outcome = self._tokens.handle(incoming.query, content_type, incoming.body)
            self._count(f"token_{outcome}")
            return reply
        problem = self._tokens.check_bearer(incoming.header("Authorization"))
        if problem is not None:
            self._count("platforms_unauthorized")
            challenge = f'Bearer error="invalid_token", error_description="{problem}"'
            headers = (("WWW-Authenticate", challenge),)
            return error_reply(401, "invalid_token", problem, headers=headers)
        self._count("platforms_ok")
        with self._lock:
            body = dump_json(self._platforms)
        return Reply(200, body)

    def _record(self, incoming: Incoming) -> None:
        form: dict[str, str] = {}
        if incoming.path == TOKEN_PATH and incoming.method == "POST":
            parsed = parse_form(incoming.header("Content-Type"), incoming.body) or {}
            form = {name: values[0] for name, values in parsed.items()}
            if "password" in form:
                form["password"] = "***"
        record = RequestRecord(
            method=incoming.method,
            path=incoming.path,
            query=incoming.query,
            headers=incoming.headers,
            form=form,
            timestamp=time.time(),
            client_ip=incoming.client_ip,
        )
        with self._lock:
            self._requests.append(record)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1
