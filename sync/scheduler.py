"""`comm100-sync run`: an APScheduler loop that shares the work with every other replica on the
same database, metrics and health, and a clean stop.

Each tick, the process looks up which (list, partner) pairs are due (sync_state), claims the
most overdue one with an atomic conditional UPDATE, syncs it, and goes on until nothing it can
claim is due. Other replicas do the same, so each list is synced once per interval by one of
them, and a replica that dies only leaves its claimed list for one interval. SIGTERM/SIGINT stop
new cycles at once; a cycle in flight goes on within SYNC_STOP_TIMEOUT_SECONDS (sync.shutdown).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sync import store, tracing
from sync.accounts import Account
from sync.errors import EX_CONFIG, EX_OK, AuthPausedError, ConfigError, SyncError
from sync.job import Cycle, RunResult, Upkeep, record_outcome, utc_now
from sync.metrics import Health, Metrics, serve
from sync.migrate import ensure_schema
from sync.redaction import Secrets
from sync.resources import Resource
from sync.retry import Deadline
from sync.settings import Settings
from sync.shutdown import Shutdown, wait_for
from sync.wiring import build_clients, build_engine, cycle_options

log = logging.getLogger(__name__)

JOB_ID = "sync"
# How often a replica looks for due work (or the interval, if shorter).
TICK_SECONDS = 5.0
# How often a replica reads the deployment's last successes for /healthz and /metrics.
FRESHNESS_SECONDS = 30.0


class Service:
    """The loop's state: one engine, a client per account (so a token per account across
    cycles), the workers of per-site requests, metrics and health."""

    def __init__(self, settings: Settings, secrets: Secrets | None = None) -> None:
        self.settings = settings
        secrets = secrets if secrets is not None else Secrets(settings.secret_values())
        self.shutdown = Shutdown(settings.stop_timeout_seconds)
        self.exit_code = EX_OK
        self.engine = build_engine(settings)
        self.clients = build_clients(
            settings, self.engine, sleep=self.shutdown.sleep, secrets=secrets
        )
        self.transport = next(iter(self.clients.values())).transport
        self.options = cycle_options(settings)
        self.upkeep = Upkeep()
        # The requests of a cycle, SYNC_HTTP_CONCURRENCY at a time; kept across cycles.
        self.pool = ThreadPoolExecutor(settings.http_concurrency, thread_name_prefix="fetch")
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        accounts = tuple(account.name for account in settings.account_list)
        names = tuple(dict.fromkeys(r.name for a in settings.account_list for r in a.resources))
        partners = tuple(a.partner_id for a in settings.account_list if a.partner_id)
        self.metrics = Metrics(accounts=accounts, resources=names, partners=partners)
        self.health = Health(
            settings.max_age_of, mask=secrets.mask, resources=names, accounts=accounts
        )
        self._in_flight = threading.Lock()
        self._schema_ready = False
        # When an account whose partner is not known yet may next ask for a token.
        self._identity_due: dict[str, float] = {}
        self._freshness_due = 0.0

    def tick(self) -> None:
        """One scheduled tick; never raises, so one failing cycle never ends the loop."""
        if self.shutdown.requested or not self._in_flight.acquire(blocking=False):
            return
        try:
            if not self._schema_ready:
                ensure_schema(self.engine, auto_migrate=self.settings.auto_migrate)
                self._schema_ready = True
            self.work()
        except ConfigError as error:
            # The schema is ahead of this code or migrations are off: ticking again cannot help.
            log.error("stopping: %s", error)
            self.exit_code = EX_CONFIG
            self.shutdown.request("configuration error")
        except SyncError as error:
            log.error("could not look for due work: %s", error)
        except Exception:
            log.exception("unexpected error in a tick; the loop goes on")
        finally:
            self._in_flight.release()

    def work(self) -> None:
        """Sync due lists, most overdue first, until none that this process can claim is due."""
        keys: dict[tuple[str, str], tuple[Account, Resource]] = {}
        for account in self.settings.account_list:
            partner = self.partner_of(account)
            if partner is not None:
                for resource in account.resources:
                    keys[(resource.name, partner)] = (account, resource)
        self.refresh_freshness(keys)
        due = store.due(self.engine, keys)
        if not due:
            return  # most ticks: no span for them
        accounts = sorted({account.name for account, _ in keys.values()})
        with tracing.span("sync.cycle", {"sync.account": ",".join(accounts)}) as span:
            results: list[RunResult] = []
            try:
                self.work_due(keys, due, results)
            finally:
                record_outcome(span, results)

    def work_due(
        self,
        keys: dict[tuple[str, str], tuple[Account, Resource]],
        due: list[tuple[str, str]],
        results: list[RunResult],
    ) -> None:
        while not self.shutdown.requested:
            for key in due:
                if self.shutdown.requested:
                    return
                account, resource = keys[key]
                if store.claim(self.engine, key, self.interval_of(resource), self.owner):
                    results.append(self.run(account, resource))
                    self.observe(results[-1])
                    break  # look again: another replica may have taken what was due next
            else:
                return
            due = store.due(self.engine, keys)

    def refresh_freshness(self, keys: Mapping[tuple[str, str], tuple[Account, Resource]]) -> None:
        """Health and the last-success gauge follow every replica's successes, not only this
        process's: read them from the run history, at most every FRESHNESS_SECONDS."""
        if time.monotonic() < self._freshness_due:
            return
        self._freshness_due = time.monotonic() + FRESHNESS_SECONDS
        for (resource, partner), (_, list_) in keys.items():
            self.metrics.stale_after.labels(partner, resource).set(
                self.settings.max_age_of(list_.name)
            )
        now = time.time()
        for (resource, partner), at in store.last_successes(self.engine, list(keys)).items():
            account, _ = keys[(resource, partner)]
            self.health.seen(account.name, resource, now - at.timestamp())
            self.metrics.seen(partner, resource, at.timestamp())

    def run(self, account: Account, resource: Resource) -> RunResult:
        client = self.clients[account.name]
        cycle = Cycle(
            self.engine, client, self.options, resource, upkeep=self.upkeep, now=utc_now,
            monotonic=time.monotonic, stop=self.shutdown, pool=self.pool, account=account.name,
        )  # fmt: skip
        try:
            # The token in hand (no request) confirms the partner, or says it is paused.
            partner = client.tokens.partner(
                Deadline(self.options.cycle_timeout_seconds, time.monotonic, self.shutdown)
            )
        except BaseException as error:
            return cycle.failed(error)
        return cycle.run(partner)

    def partner_of(self, account: Account) -> str | None:
        """The account's partner: configured, remembered, or (at most once an interval) from a
        token. None while it cannot be known, e.g. while refused credentials are paused."""
        tokens = self.clients[account.name].tokens
        known = tokens.known_partner
        if known is not None:
            return known
        if time.monotonic() < self._identity_due.get(account.name, 0.0):
            return None
        self._identity_due[account.name] = time.monotonic() + self.settings.interval_seconds
        try:
            return tokens.partner(
                Deadline(self.options.cycle_timeout_seconds, time.monotonic, self.shutdown)
            )
        except SyncError as error:
            result = Cycle(
                self.engine, self.clients[account.name], self.options, account.resources[0],
                upkeep=self.upkeep, now=utc_now, monotonic=time.monotonic, stop=self.shutdown,
                account=account.name,
            ).failed(error)  # fmt: skip
            self.observe(result)
            if not isinstance(error, AuthPausedError):
                log.error("account %s: no partner to sync for: %s", account.name, error)
            return None

    def interval_of(self, resource: Resource) -> float:
        """Until the list is next due: its interval, or until the next cron time."""
        if self.settings.cron:
            now = datetime.now(UTC)
            upcoming = CronTrigger.from_crontab(
                self.settings.cron, timezone=UTC
            ).get_next_fire_time(None, now + timedelta(seconds=1))
            return max(1.0, float((upcoming - now).total_seconds()) - 1.0)
        return self.settings.interval_of(resource.name)

    def observe(self, result: RunResult) -> None:
        client = self.clients.get(result.account)
        grants = client.tokens.requests_by_grant if client is not None else {}
        self.metrics.observe(result, grants, account=result.account)
        self.health.record(result)

    @property
    def busy(self) -> bool:
        return self._in_flight.locked()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the cycle in flight, if any."""
        if self._in_flight.acquire(timeout=max(0.0, timeout)):
            self._in_flight.release()


def _trigger(settings: Settings) -> IntervalTrigger | CronTrigger:
    if settings.cron:
        return CronTrigger.from_crontab(settings.cron, timezone=UTC)
    intervals = [settings.interval_of(r.name) for a in settings.account_list for r in a.resources]
    return IntervalTrigger(seconds=min(TICK_SECONDS, *intervals), timezone=UTC)


def run_service(settings: Settings, secrets: Secrets | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    service = Service(settings, secrets)
    scheduler = BackgroundScheduler(timezone=UTC)

    def alive() -> bool:
        thread = getattr(scheduler, "_thread", None)  # APScheduler 3 keeps its thread here
        return bool(scheduler.running and thread is not None and thread.is_alive())

    server = None
    if settings.metrics_port is not None:
        server = serve(
            settings.metrics_host,
            settings.metrics_port,
            service.metrics,
            service.health,
            live=alive,
        )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if service.busy:
            log.info(
                "%s received: no new cycle; the one in flight has %.0fs to finish",
                name,
                settings.stop_timeout_seconds,
            )
        else:
            log.info("%s received: stopping", name)
        service.shutdown.request(name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    jitter = random.uniform(0, settings.start_jitter_seconds)
    scheduler.add_job(
        service.tick,
        _trigger(settings),
        id=JOB_ID,
        max_instances=1,
        coalesce=True,
        # A tick delayed by a long cycle still runs (once), rather than being dropped.
        misfire_grace_time=max(1, int(settings.interval_seconds)),
        next_run_time=datetime.now(UTC) + timedelta(seconds=jitter),
    )
    scheduler.start()
    log.info(
        "service started as %s: %s; %d account(s); database %s",
        service.owner,
        f"cron {settings.cron!r} (UTC)"
        if settings.cron
        else f"every {settings.interval_seconds:g}s",
        len(settings.account_list),
        settings.database_url_for_display,
    )
    try:
        # Wake often enough for signal handlers to run promptly in the main thread.
        while not service.shutdown.wait(0.5):
            pass
    finally:
        scheduler.shutdown(wait=False)
        wait_for(
            lambda: service.busy,
            service.join,
            service.shutdown,
            service.transport.abort,
            exit_code=service.exit_code,
        )
        if server is not None:
            server.shutdown()
        service.pool.shutdown(wait=False, cancel_futures=True)
        service.engine.dispose()
        log.info("service stopped")
    return service.exit_code
