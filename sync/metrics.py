"""Prometheus metrics and the /healthz verdict for `comm100-sync run`, served on one port."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from sync import __version__
from sync.errors import AuthError, AuthPausedError
from sync.job import RunResult
from sync.resources import DEFAULT_RESOURCES

log = logging.getLogger(__name__)

DURATION_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ACTIONS = {"inserted": "insert", "updated": "update", "deleted": "delete", "restored": "restore"}
CYCLE_STATUSES = ("success", "partial", "failed", "skipped", "interrupted")
# The partner_id label of a cycle that failed before its partner was known.
UNKNOWN_PARTNER = "unknown"


class Metrics:
    """The service's metrics on a registry of its own (so tests can build several).

    Labels stay bounded: `partner_id` by `resource` (a handful of accounts, 8 lists),
    `account` for the credentials, `status`/`action`/`grant` from short fixed sets.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        accounts: tuple[str, ...] = ("default",),
        resources: tuple[str, ...] = DEFAULT_RESOURCES,
        partners: tuple[str, ...] = (),
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycles = Counter(
            "comm100_sync_cycles",
            "Sync cycles by outcome.",
            ["partner_id", "resource", "status"],
            registry=r,
        )
        self.last_success = Gauge(
            "comm100_sync_last_success_timestamp_seconds",
            "Unix time of the last successful cycle.",
            ["partner_id", "resource"],
            registry=r,
        )
        self.duration = Histogram(
            "comm100_sync_cycle_duration_seconds",
            "Wall time of a cycle, interval wait excluded.",
            ["resource"],
            buckets=DURATION_BUCKETS_SECONDS,
            registry=r,
        )
        self.rows = Counter(
            "comm100_sync_rows_changed",
            "Rows changed by action (each has one audit row).",
            ["partner_id", "resource", "action"],
            registry=r,
        )
        self.token_requests = Counter(
            "comm100_sync_token_requests",
            "Token requests by account and grant type.",
            ["account", "grant"],
            registry=r,
        )
        self.auth_paused = Gauge(
            "comm100_sync_auth_paused",
            "1 while the account's refused credentials are paused (no password grant is sent).",
            ["account"],
            registry=r,
        )
        self.auth_next_attempt = Gauge(
            "comm100_sync_auth_next_attempt_timestamp_seconds",
            "Unix time of the next password grant allowed for a paused account (0 when none).",
            ["account"],
            registry=r,
        )
        self.stale_after = Gauge(
            "comm100_sync_stale_after_seconds",
            "Age of a list's last success at which it counts as stale (/healthz, status, alerts).",
            ["partner_id", "resource"],
            registry=r,
        )
        info = Gauge("comm100_sync_build_info", "Version of comm100-sync.", ["version"], registry=r)
        info.labels(__version__).set(1)
        # Series exist from the start at 0 (for the partners configured), so increase() sees the
        # first failure after a restart.
        for partner in partners:
            for resource in resources:
                for status in CYCLE_STATUSES:
                    self.cycles.labels(partner, resource, status)
                for action in ACTIONS.values():
                    self.rows.labels(partner, resource, action)
        for account in accounts:
            self.auth_paused.labels(account).set(0)
            self.auth_next_attempt.labels(account).set(0)
        self._tokens_seen: dict[tuple[str, str], int] = {}
        self._last_seen: dict[tuple[str, str], float] = {}

    def observe(
        self,
        result: RunResult,
        token_requests: Mapping[str, int],
        *,
        account: str = "default",
        now: float | None = None,
    ) -> None:
        self._observe_tokens(account, token_requests)
        paused_until = result.error.paused_until if isinstance(result.error, AuthError) else None
        self.auth_paused.labels(account).set(1 if paused_until else 0)
        self.auth_next_attempt.labels(account).set(paused_until.timestamp() if paused_until else 0)
        if isinstance(result.error, AuthPausedError):
            return  # nothing was attempted: not a cycle
        partner = result.partner_id or UNKNOWN_PARTNER
        self.cycles.labels(partner, result.resource, result.status).inc()
        self.duration.labels(result.resource).observe(result.duration_seconds)
        if result.status == "success":
            self.seen(partner, result.resource, now or time.time())
        for column, action in ACTIONS.items():
            if result.counts.get(column):
                self.rows.labels(partner, result.resource, action).inc(result.counts[column])

    def seen(self, partner: str, resource: str, timestamp: float) -> None:
        """A success at `timestamp` by any process on the database: replicas share the work, so
        each reports the deployment's last success, not only its own."""
        key = (partner, resource)
        if timestamp > self._last_seen.get(key, 0.0):
            self._last_seen[key] = timestamp
            self.last_success.labels(partner, resource).set(timestamp)

    def _observe_tokens(self, account: str, token_requests: Mapping[str, int]) -> None:
        for grant, total in token_requests.items():
            delta = total - self._tokens_seen.get((account, grant), 0)
            if delta > 0:
                self.token_requests.labels(account, grant).inc(delta)
            self._tokens_seen[(account, grant)] = total

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class _Freshness:
    last_success: float | None = None
    last_status: str | None = None
    last_error: str | None = None


class Health:
    """Healthy while every list's last success (or the start, before any) is younger than its
    max age; the body names the stalest list and quotes its last error.

    A success counts whichever process had it: this one's (record) or another replica's, read
    from the database (seen), since replicas share the work and each runs only part of it.
    """

    def __init__(
        self,
        max_age_seconds: float | Callable[[str], float],
        clock: Callable[[], float] = time.monotonic,
        mask: Callable[[str], str] = lambda text: text,
        resources: tuple[str, ...] = DEFAULT_RESOURCES,
        accounts: tuple[str, ...] = ("default",),
    ) -> None:
        fixed = max_age_seconds
        self.max_age: Callable[[str], float] = (
            fixed if callable(fixed) else lambda _resource: float(fixed)
        )
        self._mask = mask
        self._clock = clock
        self._started = clock()
        self._lists = {
            (account, resource): _Freshness() for account in accounts for resource in resources
        }

    def record(self, result: RunResult) -> None:
        if result.status == "interrupted":
            return  # the process is stopping; says nothing about the data's freshness
        state = self._lists.setdefault((result.account, result.resource), _Freshness())
        state.last_status = result.status
        state.last_error = self._mask(str(result.error)) if result.error else None
        if result.status == "success":
            state.last_success = self._clock()

    def seen(self, account: str, resource: str, age_seconds: float) -> None:
        """A success `age_seconds` ago, by any process (the database's run history)."""
        state = self._lists.setdefault((account, resource), _Freshness())
        at = self._clock() - max(0.0, age_seconds)
        if state.last_success is None or at > state.last_success:
            state.last_success = at

    def check(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()

        def age(state: _Freshness) -> float:
            return now - (state.last_success if state.last_success is not None else self._started)

        # The stalest: the list furthest past (or nearest to) its own max age.
        (account, resource), stalest = max(
            self._lists.items(), key=lambda item: age(item[1]) / self.max_age(item[0][1])
        )
        oldest = age(stalest)
        limit = self.max_age(resource)
        healthy = oldest <= limit
        body: dict[str, Any] = {
            "status": "ok" if healthy else "stale",
            "max_age_seconds": limit,
            "stalest": {
                "account": account,
                "resource": resource,
                "last_success_age_seconds": (
                    None if stalest.last_success is None else round(oldest, 1)
                ),
                "last_cycle_status": stalest.last_status,
            },
        }
        if not healthy:
            body["reason"] = (
                f"no successful {resource} cycle for {oldest:.0f}s (limit {limit:.0f}s)"
                if stalest.last_success is not None
                else f"no successful {resource} cycle since start {oldest:.0f}s ago"
            )
            if stalest.last_error:
                body["last_error"] = stalest.last_error
        return healthy, body


def serve(
    host: str,
    port: int,
    metrics: Metrics,
    health: Health,
    live: Callable[[], bool] = lambda: True,
) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /livez in a daemon thread; returns the server.

    /livez is liveness (the process and its scheduler run), whatever the API or the database
    say; /healthz is freshness. Restarting a pod cannot fix an outage, so only /livez may.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                alive = live()
                verdict = json.dumps({"status": "ok" if alive else "dead"}).encode()
                self._send(200 if alive else 503, verdict, "application/json")
            elif path in ("/healthz", "/health", "/readyz"):
                healthy, body = health.check()
                self._send(200 if healthy else 503, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics server: %s", format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics and health on http://%s:%d/metrics and /healthz", host, server.server_port)
    return server
