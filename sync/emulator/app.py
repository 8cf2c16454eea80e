"""The Emulator: configuration, state (lists, tokens, faults, gates, stats) and request routing."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import TracebackType

from sync.emulator.control import CONTROL_PREFIX, handle_control
from sync.emulator.data import (
    DEFAULT_PARTNER_ID,
    default_document,
    populated_document,
)
from sync.emulator.faults import ANSWERS_NORMALLY, Fault, FaultQueue, fault_reply
from sync.emulator.gates import Gate, GateBoard
from sync.emulator.handler import EmulatorServer, Incoming
from sync.emulator.lists import (
    LIST_NAMES,
    PARTNER_LISTS,
    TOKEN_ENDPOINT,
    TOKEN_PATH,
    Items,
    ListRoute,
    ListStore,
    document_lists,
    filter_by_module,
    list_route,
    resign_icons,
    route_for_endpoint,
    target_for_path,
)
from sync.emulator.ratelimit import RateLimiter, too_many_requests
from sync.emulator.records import RequestLog, RequestRecord
from sync.emulator.replies import Reply, dump_json, error_reply
from sync.emulator.tokens import Login, TokenAuthority

DEFAULT_CLIENT_ID = "demo-client"
DEFAULT_EMAIL = "demo@example.com"
DEFAULT_PASSWORD = "demo-password"
STAT_KEYS = (
    "token_password",
    "token_refresh",
    "token_rejected",
    "token_fault",
    *(f"{name}_{outcome}" for name in LIST_NAMES for outcome in ("ok", "unauthorized", "fault")),
    "rate_limited",
)
# Two waits (accept loop, then request threads) stay within the promised second.
STOP_TIMEOUT_SECONDS = 0.5


class Emulator:
    """A local stand-in for the Comm100 Partner API: token endpoint, every list, faults, gates.

    Lists start as a small realistic account (data.py), or as the `data` document given
    ({"platforms": [...], "agents": {"10001": [...]}, ...}; lists it leaves out are empty);
    `platforms`, when given, replaces the platform list of either.

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
        platforms: Sequence[Mapping[str, object]] | None = None,
        data: Mapping[str, object] | None = None,
        latency_seconds: float = 0.0,
        rotate_plan_icons: bool = False,
        control: bool = True,
    ) -> None:
        if token_lifetime_seconds < 0:
            raise ValueError("token_lifetime_seconds must not be negative")
        if latency_seconds < 0:
            raise ValueError("latency_seconds must not be negative")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.email = email
        self.password = password
        self.partner_id = partner_id
        self.control = control
        self.rate_limit = rate_limit
        self.rate_window_seconds = rate_window_seconds
        # Read on every request, so both may be changed while serving.
        self.latency_seconds = latency_seconds
        self.rotate_plan_icons = rotate_plan_icons
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
        self._gates = GateBoard()
        self._lock = threading.Lock()
        self._in_flight = self._max_in_flight = 0
        self._lists = ListStore()
        # Partners added with add_partner(): their own lists, reached with their own tokens.
        self._partner_lists: dict[str, ListStore] = {}
        self._icon_serials = itertools.count(1)
        self.load(default_document() if data is None else data)
        if platforms is not None:
            self.set_platforms(platforms)
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._requests = RequestLog()
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
        # Wakes the delay and drip faults and the latency; closing the connections wakes idle
        # keep-alive readers; released gates let held requests finish.
        self._stopping.set()
        self._gates.release_all()
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

    def set_list(
        self,
        name: str,
        items: Sequence[Mapping[str, object]],
        *,
        site_id: int | None = None,
        partner: str | None = None,
    ) -> None:
        """Replace one list; objects are served as given, extra fields included.

        Args:
            name: one of LIST_NAMES; "site_products" is a site's /products list.
            items: the objects, copied in.
            site_id: the site, for a per-site list (SITE_LISTS) only.
            partner: a partner added with add_partner (default: the first account's).

        Raises:
            ValueError: unknown name, or site_id given to a partner list or missing for a
                per-site one, or an item that is not an object.
            TypeError: a value that JSON cannot carry.
        """
        self._partner_store(partner).set(list_route(name, site_id), items)

    def get_list(
        self, name: str, *, site_id: int | None = None, partner: str | None = None
    ) -> Items:
        """A copy of one list (empty if never set); same arguments as set_list."""
        return self._partner_store(partner).get(list_route(name, site_id))

    def _partner_store(self, partner: str | None) -> ListStore:
        if partner is None or partner == self.partner_id:
            return self._lists
        with self._lock:
            return self._partner_lists[partner]

    def set_sites(self, sites: Sequence[Mapping[str, object]]) -> None:
        """Replace the site list; the per-site lists of sites left out stay as they are."""
        self.set_list("sites", sites)

    def set_platforms(self, platforms: Sequence[Mapping[str, object]]) -> None:
        """Replace the platform list (set_list("platforms", ...))."""
        self.set_list("platforms", platforms)

    @property
    def platforms(self) -> Items:
        """A copy of the current platform list."""
        return self.get_list("platforms")

    def load(self, document: Mapping[str, object]) -> None:
        """Replace every list with a data document's; the lists it leaves out become empty.

        Raises:
            ValueError: the document is not of the shape lists.document_lists describes.
        """
        self._lists.replace(document_lists(document))

    def populate(self, sites: int, per_site: int = 10, seed: int = 0) -> None:
        """Replace the sites and every per-site list with a generated account (benchmarks).

        Site ids run from 20001; see data.populated_document. Platforms, products and plans
        stay as they are.
        """
        generated = document_lists(populated_document(sites, per_site, seed))
        self._lists.replace(generated, keep=[n for n in PARTNER_LISTS if n != "sites"])

    def inject(self, endpoint: str, fault: Fault, times: int | None = 1) -> None:
        """Queue a fault for the next `times` requests to `endpoint` (None: all).

        Args:
            endpoint: "token"; a list name ("agents": that list on every site); or a per-site
                list on one site ("agents@10001"), whose faults come before the list's own.
            fault: what to do instead of (or on top of) the real answer.
            times: how many requests it spoils; None for every one until clear_faults().

        Faults fire in FIFO order per endpoint, before the grant, the bearer token or the site
        is checked.
        """
        route_for_endpoint(endpoint)
        self._faults.push(endpoint, fault, times)

    def gate(self, endpoint: str, times: int = 1) -> Gate:
        """Hold the next `times` requests to `endpoint` until the returned gate is released.

        `endpoint` is named as for inject(); a site-scoped gate takes a request before a gate
        on the whole list. stop() releases every gate.
        """
        route_for_endpoint(endpoint)
        return self._gates.open(endpoint, times)

    def find_gate(self, gate_id: int) -> Gate | None:
        """The gate with this id (Gate.id), for the control API."""
        return self._gates.find(gate_id)

    def set_rate_limit(self, limit: int | None, window_seconds: float) -> None:
        """Change the per-IP limit now (None: no limit); calls already counted stay counted."""
        if limit is not None and (limit < 1 or window_seconds <= 0):
            raise ValueError("rate limit and window must be positive")
        with self._lock:
            self.rate_limit, self.rate_window_seconds = limit, window_seconds
            if limit is None:
                self._limiter = None
            elif self._limiter is None:
                self._limiter = RateLimiter(limit, window_seconds)
            else:
                self._limiter.configure(limit, window_seconds)

    def clear_faults(self) -> None:
        self._faults.clear()

    def add_partner(
        self,
        partner_id: str,
        *,
        client_id: str,
        email: str,
        password: str,
        data: Mapping[str, object] | None = None,
    ) -> None:
        """Another partner account: its own login, and its own lists (the default account's
        data, or `data`), served to requests that carry its tokens."""
        lists = ListStore()
        lists.replace(document_lists(default_document() if data is None else data))
        with self._lock:
            self._partner_lists[partner_id] = lists
        self._tokens.add_login(Login(client_id, email, password, partner_id))

    def _store_for(self, authorization: str | None) -> ListStore:
        partner = self._tokens.partner_of(authorization)
        with self._lock:
            return self._partner_lists.get(partner, self._lists)

    def set_password(self, password: str) -> None:
        """Change the account's password, as a partner does in Comm100's portal."""
        self.password = password
        self._tokens.password = password

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
            self._max_in_flight = self._in_flight

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the API requests seen so far (the latest 100,000), oldest first."""
        return self._requests.snapshot()

    def clear_requests(self) -> None:
        self._requests.clear()

    def count_requests(self, path_prefix: str = "", method: str | None = None) -> int:
        """How many recorded API requests have a path starting with `path_prefix`."""
        return self._requests.count(path_prefix, method)

    # -- serving ---------------------------------------------------------------------------

    @property
    def max_in_flight(self) -> int:
        """The most API requests this emulator has been answering at once (control excluded)."""
        with self._lock:
            return self._max_in_flight

    def _respond(self, incoming: Incoming) -> Reply:
        if self.control and incoming.path.startswith(CONTROL_PREFIX):
            return handle_control(self, incoming)
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return self._respond_api(incoming)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _respond_api(self, incoming: Incoming) -> Reply:
        with_form = incoming.path == TOKEN_PATH and incoming.method == "POST"
        self._requests.record(incoming, with_form=with_form)
        if self.latency_seconds > 0:
            self._stopping.wait(self.latency_seconds)
        limited = self._rate_limited(incoming.client_ip)
        if limited is not None:
            return limited
        target = target_for_path(incoming.path)
        if target is None:
            return error_reply(404, "not_found", f"no such endpoint: {incoming.path}")
        if incoming.method != target.method:
            allow = target.method
            description = f"{incoming.path} accepts {allow} only"
            return error_reply(405, "method_not_allowed", description, headers=(("Allow", allow),))
        self._gates.hold(target.keys)
        return self._serve(target.endpoint, target.keys, incoming)

    def _serve(self, endpoint: str, keys: tuple[str, ...], incoming: Incoming) -> Reply:
        """The answer, or the fault queued for `keys` (most specific first)."""
        fault = self._faults.take(keys)
        if fault is None:
            return self._answer(endpoint, incoming)
        route = route_for_endpoint(endpoint)
        self._count(f"{TOKEN_ENDPOINT if route is None else route.spec.name}_fault")
        if fault.kind not in ANSWERS_NORMALLY:
            if route is None:
                return fault_reply(None, fault, self._tokens.sample_response())
            return fault_reply(route.spec, fault, self._lists.get(route))
        if fault.kind == "delay":
            self._stopping.wait(fault.delay_seconds)
        reply = self._answer(endpoint, incoming)
        if fault.kind == "wrong_content_type":
            return replace(reply, content_type="text/plain; charset=utf-8")
        if fault.kind == "drip":
            return replace(reply, delivery="drip", delay_seconds=fault.delay_seconds)
        return reply

    def _rate_limited(self, client_ip: str) -> Reply | None:
        """A 429 when `client_ip` is over the limit (token requests count too), else None."""
        with self._lock:
            limiter, limit, window = self._limiter, self.rate_limit, self.rate_window_seconds
        retry_after = None if limiter is None else limiter.acquire(client_ip)
        if retry_after is None or limit is None:
            return None
        self._count("rate_limited")
        return too_many_requests(limit, window, retry_after)

    def _answer(self, endpoint: str, incoming: Incoming) -> Reply:
        """What the real endpoint would answer.

        Args:
            endpoint: "token", or the request's list endpoint ("platforms", "agents@10001").
        """
        route = route_for_endpoint(endpoint)
        if route is None:
            content_type = incoming.header("Content-Type")
            reply, outcome = self._tokens.handle(incoming.query, content_type, incoming.body)
            self._count(f"token_{outcome}")
            return reply
        name = route.spec.name
        problem = self._tokens.check_bearer(incoming.header("Authorization"))
        if problem is not None:
            self._count(f"{name}_unauthorized")
            challenge = f'Bearer error="invalid_token", error_description="{problem}"'
            headers = (("WWW-Authenticate", challenge),)
            return error_reply(401, "invalid_token", problem, headers=headers)
        lists = self._store_for(incoming.header("Authorization"))
        if route.site_id is not None:
            refusal = lists.refusal(route.site_id)
            if refusal is not None:
                return error_reply(*refusal)
        self._count(f"{name}_ok")
        return Reply(200, self._list_body(lists, route, incoming.query))

    def _list_body(self, lists: ListStore, route: ListRoute, query: dict[str, str]) -> bytes:
        name = route.spec.name
        if name == "products" and "module" in query:
            return dump_json(filter_by_module(lists.get(route), query["module"]))
        if name == "plans" and self.rotate_plan_icons:
            return dump_json(resign_icons(lists.get(route), next(self._icon_serials)))
        return lists.body(route)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1
