"""`comm100-sync run`: an APScheduler loop of cycles, metrics and health, and a clean stop.

SIGTERM/SIGINT stop new cycles at once; a cycle in flight goes on within SYNC_STOP_TIMEOUT_SECONDS
(see sync.shutdown), so a rolling deploy neither abandons nearly finished work nor waits for ever.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from sync.errors import EX_CONFIG, EX_OK, ConfigError, SyncError
from sync.job import Upkeep, run_account
from sync.metrics import Health, Metrics, serve
from sync.migrate import ensure_schema
from sync.redaction import Secrets
from sync.settings import Settings
from sync.shutdown import Shutdown, wait_for
from sync.wiring import build_client, build_engine, cycle_options

log = logging.getLogger(__name__)

JOB_ID = "sync"


class Service:
    """The loop's state: one engine, one client (so one token across cycles), metrics."""

    def __init__(self, settings: Settings, secrets: Secrets | None = None) -> None:
        self.settings = settings
        secrets = secrets if secrets is not None else Secrets(settings.secret_values())
        self.shutdown = Shutdown(settings.stop_timeout_seconds)
        self.exit_code = EX_OK
        self.engine = build_engine(settings)
        # Retry back-offs end at a stop's cutoff.
        self.client = build_client(
            settings, self.engine, sleep=self.shutdown.sleep, secrets=secrets
        )
        self.options = cycle_options(settings)
        self.upkeep = Upkeep()
        # The requests of a cycle, SYNC_HTTP_CONCURRENCY at a time; kept across cycles.
        self.pool = ThreadPoolExecutor(settings.http_concurrency, thread_name_prefix="fetch")
        names = tuple(resource.name for resource in settings.resource_list)
        self.metrics = Metrics(resources=names)
        self.health = Health(settings.health_max_age, mask=secrets.mask, resources=names)
        self._in_flight = threading.Lock()
        self._schema_ready = False

    def cycle(self) -> None:
        """One scheduled tick; never raises, so one failing cycle never ends the loop."""
        if self.shutdown.requested or not self._in_flight.acquire(blocking=False):
            return
        try:
            if not self._schema_ready:
                ensure_schema(self.engine, auto_migrate=self.settings.auto_migrate)
                self._schema_ready = True
            results = run_account(
                self.engine,
                self.client,
                self.options,
                self.settings.resource_list,
                upkeep=self.upkeep,
                stop=self.shutdown,
                pool=self.pool,
            )
            for result in results:
                self.metrics.observe(result, self.client.tokens.requests_by_grant)
                self.health.record(result)
        except ConfigError as error:
            # The schema is ahead of this code or migrations are off: ticking again cannot help.
            log.error("stopping: %s", error)
            self.exit_code = EX_CONFIG
            self.shutdown.request("configuration error")
        except SyncError as error:
            log.error("cycle could not start: %s", error)
            for resource in self.settings.resource_list:
                self.metrics.cycles.labels(resource.name, "failed").inc()
        except Exception:
            log.exception("unexpected error in a cycle; the loop goes on")
            for resource in self.settings.resource_list:
                self.metrics.cycles.labels(resource.name, "failed").inc()
        finally:
            self._in_flight.release()

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
    return IntervalTrigger(seconds=settings.interval_seconds, timezone=UTC)


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
        service.cycle,
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
        "service started: %s; database %s",
        f"cron {settings.cron!r} (UTC)"
        if settings.cron
        else f"every {settings.interval_seconds:g}s",
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
            service.client.transport.abort,
            exit_code=service.exit_code,
        )
        if server is not None:
            server.shutdown()
        service.pool.shutdown(wait=False, cancel_futures=True)
        service.engine.dispose()
        log.info("service stopped")
    return service.exit_code
